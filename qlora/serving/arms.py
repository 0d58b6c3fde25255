"""Experiments on the router: which aliases run an A/B, which arm a request goes to, and the
binding of every completion id to its arm and version in the journal.

An experiment is registered by the admin API (``PUT /admin/experiments/<alias>``) and kept in
``experiments.json`` beside the alias table, so a restarted router routes users as before.
The split itself is the alias's weights (``PUT /admin/aliases``): the candidate's weight is
its traffic share. A request carrying ``X-QLora-Pair-Of: <response id>`` is sent to the
*other* arm, so a client can show two answers side by side for a pairwise preference.
"""
from __future__ import annotations

import json
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from qlora.ab.assignment import CANDIDATE, CONTROL, assign_arm, user_hash
from qlora.ab.journal import Journal, ResponseRecord
from qlora.serving.state_files import atomic_write_json, read_json

PAIR_HEADER = "x-qlora-pair-of"


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    alias: str
    control: str       # versioned names
    candidate: str
    assignment_header: str = "X-QLora-User"

    def version_of(self, arm: str) -> str:
        return self.candidate if arm == CANDIDATE else self.control

    def arm_of(self, served: str) -> str:
        return CANDIDATE if served == self.candidate else CONTROL if served == self.control else ""


class Experiments:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        raw = read_json(self.path, "experiment table").get("experiments", {})
        self._by_alias = {alias: Experiment(**spec) for alias, spec in raw.items()}

    def _write(self) -> None:
        atomic_write_json(self.path, {"experiments": {a: asdict(e) for a, e in self._by_alias.items()}})

    def start(self, experiment: Experiment) -> None:
        with self._lock:
            running = self._by_alias.get(experiment.alias)
            if running and running.experiment_id != experiment.experiment_id:
                raise ValueError(f"alias {experiment.alias!r} already runs experiment {running.experiment_id!r}; "
                                 "stop it first (one experiment per domain)")
            self._by_alias[experiment.alias] = experiment
            self._write()

    def stop(self, alias: str) -> Experiment | None:
        with self._lock:
            stopped = self._by_alias.pop(alias, None)
            if stopped:
                self._write()
            return stopped

    def get(self, alias: str) -> Experiment | None:
        with self._lock:
            return self._by_alias.get(alias)

    def all(self) -> dict[str, Experiment]:
        with self._lock:
            return dict(self._by_alias)


def user_key(body: dict, headers, client_host: str | None, header_name: str) -> str:
    """The OpenAI ``user`` field, else the configured header, else the client address."""
    if isinstance(body.get("user"), str) and body["user"]:
        return "user:" + body["user"]
    if value := headers.get(header_name):
        return "header:" + value
    return "addr:" + (client_host or "unknown")


def answer_of(completion: dict) -> str:
    choice = (completion.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or choice.get("text") or ""


class StreamSniffer:
    """Reads a server-sent-event stream as it passes: the completion id, text and usage."""

    def __init__(self):
        self._buffer = b""
        self.response_id, self.text, self.completion_tokens = "", "", 0
        self._parts: list[str] = []

    def feed(self, piece: bytes) -> None:
        self._buffer += piece
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            data = event.decode("utf-8", "replace").removeprefix("data: ").strip()
            if not data or data == "[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                continue
            self.response_id = self.response_id or chunk.get("id", "")
            for choice in chunk.get("choices") or []:
                self._parts.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
            self.completion_tokens = (chunk.get("usage") or {}).get("completion_tokens", self.completion_tokens)
        self.text = "".join(self._parts)


class ArmRouting:
    """The router's hook: choose a target for a request, and journal what answered."""

    def __init__(self, experiments: Experiments, journal: Journal, aliases):
        self.experiments, self.journal, self.aliases = experiments, journal, aliases

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, aliases) -> "ArmRouting":
        state_dir = Path(state_dir)
        return cls(Experiments(state_dir / "experiments.json"), Journal(state_dir / "journal.sqlite"), aliases)

    def choose(self, requested: str, body: dict, headers, client_host: str | None) -> tuple[str, str, str, str]:
        """(target, arm, experiment id, user hash); no experiment -> the alias table's own pick."""
        experiment = self.experiments.get(requested)
        weights = self.aliases.get(requested) if experiment else None
        if not experiment or not weights or set(weights) - {experiment.control, experiment.candidate}:
            key = user_key(body, headers, client_host, experiment.assignment_header if experiment else "x-qlora-user")
            return self.aliases.resolve(requested), "", "", user_hash(key)
        key = user_key(body, headers, client_host, experiment.assignment_header)
        pair_of = headers.get(PAIR_HEADER)
        first = self.journal.response(pair_of) if pair_of else None
        if first and first["experiment_id"] == experiment.experiment_id and first["arm"]:
            arm = CONTROL if first["arm"] == CANDIDATE else CANDIDATE
        else:
            arm = assign_arm(experiment.experiment_id, key, weights.get(experiment.candidate, 0.0))
        return experiment.version_of(arm), arm, experiment.experiment_id, user_hash(key)

    def record(self, response_id: str, requested: str, served: str, arm: str, experiment_id: str, user: str,
               latency_s: float, status: int, completion_tokens: int, messages, answer: str) -> None:
        if not response_id:
            if status == 200:
                return  # a backend that gave no id: nothing a client could rate
            response_id = f"failed-{uuid.uuid4().hex}"  # errors count in the arm's guardrails
        prompt = messages if messages is not None else []
        self.journal.record_response(ResponseRecord(
            response_id=response_id, alias=requested, served=served, arm=arm, experiment_id=experiment_id,
            user_hash=user, latency_ms=1000 * latency_s, status=status, completion_tokens=completion_tokens,
            prompt_json=json.dumps(prompt, ensure_ascii=False), answer=answer))

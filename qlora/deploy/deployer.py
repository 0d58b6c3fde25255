"""Blue-green adapter deploys on the router, with canary steps and automatic rollback.

Order of steps (each recorded with its duration):
gate -> inspect (who serves the alias now) -> base (the adapter's base fingerprint is the
server's) -> load (new immutable name) -> listed
(/v1/models shows it) -> smoke (golden prompts) -> shift N% ... 100% (canary checks) ->
version_info -> drain -> unload the old version. Re-deploying the version that already serves
(or `rollback --to` it) is verified by a real completion through the alias, never assumed.
The old version stays loaded until the very end, so a rollback is one alias move.
Any failure before the last step moves the alias back to the old version, proves
that it answers, unloads the new one, and records why.
"""
from __future__ import annotations

import time
from typing import Callable

from qlora.deploy import canary
from qlora.core.adapters import AdapterRef, version_of
from qlora.deploy.config import DeployConfig
from qlora.deploy.history import (
    BLOCKED, DEPLOYED, FAILED, ROLLED_BACK, DeploymentRecord, record_deployment, utc_now,
)
from qlora.deploy.gate_check import gate_verdict
from qlora.deploy.serving_state import Serving, ServingState, describe_error
from qlora.deploy.smoke import GoldenPrompt, smoke_test
from qlora.core.warehouse import Warehouse
from qlora.serving.endpoint import ServingEndpoint


class StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


class Deployer:
    def __init__(self, client: ServingEndpoint, warehouse: Warehouse, config: DeployConfig, golden: list[GoldenPrompt],
                 on_step: Callable[[str], None] | None = None):
        self.client, self.warehouse, self.config, self.golden = client, warehouse, config, golden
        self.state = ServingState(client, warehouse)
        # Called with each step's name before it runs: Dagster logging, and fault injection in tests.
        self.on_step = on_step or (lambda step: None)

    def deploy(self, adapter: AdapterRef, action: str = "deploy") -> DeploymentRecord:
        """Deploy `adapter` (action "deploy": only if its latest gate decision passed)."""
        record = DeploymentRecord(adapter.domain, adapter.version, adapter.path, action,
                                  gate_passed=False, started_at=utc_now())
        record.gate_passed, gate_reason = gate_verdict(self.warehouse, adapter.domain, adapter.version)
        if action == "deploy" and not record.gate_passed:
            return self._finish(record, BLOCKED, gate_reason)
        try:
            previous = self._step(record, "inspect", lambda: self.state.serving(adapter.domain))
            record.steps[-1]["detail"] = f"{previous.name} serves the alias" if previous else "first deploy"
            if previous is None:  # no alias: a first deploy, unless the router lost its alias table
                previous = self._step(record, "restore_alias", lambda: self.state.restore_lost_alias(
                    adapter.domain, self.config.load_timeout_s))
                record.steps[-1]["detail"] = (f"the alias was missing; {previous.name} (live in the deployment "
                                              "history) put back on it") if previous else "nothing went live before"
        except StepFailed as exc:
            return self._finish(record, FAILED, f"{exc}; nothing was changed")
        record.previous_version = version_of(previous.name) if previous else None
        try:
            self._step(record, "base", lambda: self.state.check_base(adapter))
        except StepFailed as exc:
            return self._finish(record, BLOCKED, f"{exc}; nothing was changed")
        if previous and previous.name == adapter.served_name:
            return self._verify_serving(record, adapter, previous)
        try:
            self._go_live(record, adapter, previous)
        except StepFailed as exc:
            confirmed, detail = self._rollback(adapter, previous)
            return self._finish(record, ROLLED_BACK if confirmed else FAILED, f"{exc}; {detail}")
        note = ""
        if previous:
            try:
                self._step(record, "unload_old", lambda: self.state.unload(previous.name))
            except StepFailed as exc:  # the new version serves; a leftover old one only costs memory
                note = f"new version serves, but {exc}"
        return self._finish(record, DEPLOYED, note)

    def _go_live(self, record: DeploymentRecord, adapter: AdapterRef, previous: Serving | None) -> None:
        name, config = adapter.served_name, self.config
        self._step(record, "load", lambda: self.state.load(name, adapter.path))
        self._step(record, "listed", lambda: self.client.wait_for_model(name, timeout_s=config.load_timeout_s))
        self._step(record, "smoke", lambda: self._smoke(name))
        conversations = [p.messages for p in self.golden]
        for weight in config.weight_steps:
            def shift(weight=weight):
                before = canary.request_counts(self.client)
                weights = {name: weight, previous.name: 1.0 - weight} if previous and weight < 1 else {name: 1.0}
                self.client.set_alias(adapter.domain, weights)
                allowed = {name} | ({previous.name} if previous and weight < 1 else set())
                report = canary.run_step(self.client, adapter.domain, name, allowed, weight,
                                         conversations, config, before)
                if report.problem:
                    raise StepFailed(f"shift {weight:.0%}", report.problem)
                return report.to_dict()
            self._step(record, f"shift {weight:.0%}", shift)
        self._step(record, "version_info", lambda: self.state.version_info(adapter))
        self._step(record, "verify", lambda: self.state.verify(adapter.domain, name, self.golden[0].messages,
                                                                config.golden_max_tokens))
        self._step(record, "drain", lambda: self.state.drain(previous.name if previous else None, config.drain_s))

    def _verify_serving(self, record: DeploymentRecord, adapter: AdapterRef, serving: Serving) -> DeploymentRecord:
        """The version already holds the alias: prove it answers (loading it again if the server lost it)."""
        try:
            self._step(record, "ensure_loaded", lambda: self.state.ensure_loaded(
                serving.name, serving.path or adapter.path, self.config.load_timeout_s))
            self._step(record, "verify", lambda: self.state.verify(
                adapter.domain, adapter.served_name, self.golden[0].messages, self.config.golden_max_tokens))
        except StepFailed as exc:
            return self._finish(record, FAILED, f"{adapter.served_name} holds the alias but does not answer: {exc}")
        return self._finish(record, DEPLOYED, f"{adapter.served_name} already serves the alias and answered")

    def _smoke(self, name: str) -> dict:
        c = self.config
        result = smoke_test(self.client, name, self.golden, c.golden_max_tokens,
                            c.smoke_min_similarity, c.smoke_max_mismatch_rate)
        if not result.passed:
            raise StepFailed("smoke", result.reason)
        return {"answered": result.answered, "mean_similarity": result.mean_similarity}

    def _step(self, record: DeploymentRecord, step: str, work: Callable[[], object]):
        started = time.monotonic()
        entry = {"step": step}
        try:
            self.on_step(step)
            result = work()
        except StepFailed as exc:
            entry.update(ok=False, detail=exc.reason)
            raise
        except Exception as exc:  # server errors, refused loads, a server that went away
            entry.update(ok=False, detail=describe_error(exc))
            raise StepFailed(step, describe_error(exc)) from exc
        else:
            entry.update(ok=True, detail=result if isinstance(result, (dict, str)) else None)
            return result
        finally:
            entry["seconds"] = round(time.monotonic() - started, 3)
            record.steps.append(entry)

    def _rollback(self, adapter: AdapterRef, previous: Serving | None) -> tuple[bool, str]:
        """Give the alias back to `previous`, prove it answers, drop the new version; retry while the server is away."""
        deadline = time.monotonic() + self.config.rollback_timeout_s
        probe = self.golden[0].messages
        while True:
            try:
                if previous:
                    self.state.ensure_loaded(previous.name, previous.path, self.config.load_timeout_s)
                    self.client.set_alias(adapter.domain, {previous.name: 1.0})
                    answer = self.client.chat(adapter.domain, probe, max_tokens=self.config.golden_max_tokens)
                    if answer.model != previous.name:
                        raise RuntimeError(f"alias answered by {answer.model!r} after rollback")
                else:
                    self.state.clear_alias(adapter.domain)
                # Requests already routed to the new version finish before it goes away.
                self.state.drain(adapter.served_name, self.config.drain_s)
                self.state.unload(adapter.served_name)
                if previous:
                    return True, f"rolled back: {previous.name} serves {adapter.domain} and answered a probe"
                return True, f"rolled back: nothing served {adapter.domain} before, the alias is cleared"
            except Exception as exc:
                if time.monotonic() >= deadline:
                    return False, (f"rollback NOT confirmed within {self.config.rollback_timeout_s:.0f}s: "
                                   f"{describe_error(exc)}")
                time.sleep(0.5)

    def _finish(self, record: DeploymentRecord, result: str, reason: str) -> DeploymentRecord:
        record.result, record.reason, record.finished_at = result, reason, utc_now()
        record_deployment(self.warehouse, record)
        return record

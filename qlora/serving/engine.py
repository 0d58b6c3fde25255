"""The batching engine: one thread owns the model; requests queue up and share forward passes.

The loop waits ``batch_window_ms`` after the first request for others to arrive, left-pads
the prompts, prefills once, then decodes step by step: each row keeps its own adapter,
temperature, stop strings and token budget, is answered the step it finishes, and frees its
place for a waiting request, which joins between two steps (running_batch.py). Adapter loads
run on the same thread; while one waits, no request joins, so it runs as soon as the rows in
flight finish and never races a forward pass.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from qlora.serving.decoding import RowDecoder
from qlora.serving.running_batch import RunningBatch


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    adapter: str | None          # None: the base model
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0               # 0 or -1: off
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    on_delta: Callable[[str], None] | None = None  # streaming: called with each new piece of text
    future: Future = field(default_factory=Future)


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str           # "stop" | "length"


log = logging.getLogger(__name__)
_WAKE = object()  # queued to wake the loop for a command


class AdapterGone(LookupError):
    """The adapter a queued request named was unloaded before its batch ran."""


class RowFailed(RuntimeError):
    """This request failed inside the model (logged with the cause); its batch-mates were not affected."""


@dataclass
class _Command:
    call: Callable[[], object]
    future: Future = field(default_factory=Future)


class BatchingEngine:
    def __init__(self, store, max_batch_size: int = 32, batch_window_ms: float = 5.0):
        self.store = store
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1000
        self.tokenizer = store.tokenizer
        self.stop_token_ids = _stop_token_ids(store)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.batch_log: deque[tuple[int, tuple]] = deque(maxlen=256)  # (batch size, adapters): what shared a pass
        self._queue: queue.Queue = queue.Queue()
        # Commands (adapter loads) jump the request queue: under full load a deploy must not wait
        # behind every queued request; they run between two batches.
        self._commands: deque[_Command] = deque()
        self._resume = threading.Event()
        self._resume.set()
        self._stopping = False
        self._holding = 0
        self._thread = threading.Thread(target=self._loop, name="qlora-batching-engine", daemon=True)
        self._thread.start()

    # -- called from request handlers (any thread) ------------------------------------------------
    def submit(self, request: GenerationRequest) -> Future:
        self._queue.put(request)
        return request.future

    def run_exclusive(self, call: Callable[[], object]) -> Future:
        """Run ``call`` on the engine thread between batches (adapter load/unload)."""
        command = _Command(call)
        self._commands.append(command)
        self._queue.put(_WAKE)
        return command.future

    def pending(self) -> int:
        """Requests waiting (including one the paused loop holds)."""
        with self._queue.mutex:
            waiting = sum(isinstance(item, GenerationRequest) for item in self._queue.queue)
        return waiting + self._holding

    @contextmanager
    def paused(self):
        """Hold the loop so queued requests are taken as one batch when it resumes (tests, bench)."""
        self._resume.clear()
        try:
            yield
        finally:
            self._resume.set()

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- engine thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            first = self._queue.get()
            self._holding = isinstance(first, GenerationRequest)
            self._resume.wait()
            self._holding = 0
            self._run_commands()
            if first is None:
                return
            if first is _WAKE:
                continue
            batch, deadline = [first], time.monotonic() + self.batch_window_s
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, GenerationRequest):
                    batch.append(item)
                elif item is None:  # stop: serve this batch first
                    self._queue.put(item)
                    break
            self._run_commands()
            self._run_batch(batch)

    def _run_commands(self) -> None:
        while self._commands:
            command = self._commands.popleft()
            try:
                command.future.set_result(command.call())
            except Exception as exc:
                command.future.set_exception(exc)

    def _run_batch(self, batch: list[GenerationRequest]) -> None:
        runnable = self._runnable(batch)
        if runnable:
            self._run_isolated(runnable, admit=True)

    def _runnable(self, batch: list[GenerationRequest]) -> list[GenerationRequest]:
        loaded = self.store.adapter_paths
        runnable = []
        for request in batch:
            if request.adapter is not None and request.adapter not in loaded:
                request.future.set_exception(AdapterGone(request.adapter))
            elif not request.prompt_ids:  # validation answers 400 first; a zero-token row must never reach bnb
                request.future.set_exception(RowFailed("zero-token prompt refused before the model"))
            else:
                runnable.append(request)
        return runnable

    def _run_isolated(self, batch: list[GenerationRequest], admit: bool) -> None:
        """Decode the batch; if a pass fails, run the rows still unanswered in halves apart (and
        without newcomers), so only the row at fault fails."""
        members = list(batch)  # grows with the requests admitted while it decodes
        try:
            self._decode(members, admit)
        except Exception as exc:  # a failed row fails its own request, never the server or its batch-mates
            unanswered = [r for r in members if not r.future.done()]
            if len(unanswered) == 1:
                log.warning("request failed in the model: %r", exc)
                unanswered[0].future.set_exception(RowFailed(repr(exc)))
                return
            middle = len(unanswered) // 2
            for half in (unanswered[:middle], unanswered[middle:]):
                if half:
                    self._run_isolated(half, admit=False)

    @torch.inference_mode()
    def _decode(self, members: list[GenerationRequest], admit: bool) -> None:
        running = RunningBatch(self.store, self.pad_id, self.stop_token_ids)
        self.batch_log.append((len(members), tuple(r.adapter for r in members)))
        running.join(members)
        while len(running):
            for request, row in running.step():
                _answer(request, row)
            room = self.max_batch_size - len(running)
            if admit and room and running.can_join:
                joining = self._runnable(self._waiting(room))
                if joining:
                    self.batch_log.append((len(joining), tuple(r.adapter for r in joining)))
                    members += joining
                    running.join(joining)

    def _waiting(self, room: int) -> list[GenerationRequest]:
        """Up to ``room`` queued requests, unless a command, a stop or a pause should come first."""
        taken: list[GenerationRequest] = []
        while len(taken) < room and not self._commands and self._resume.is_set():
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, GenerationRequest):  # stop or a command's wake-up: for the loop
                self._queue.put(item)
                break
            taken.append(item)
        return taken


def _answer(request: GenerationRequest, row: RowDecoder) -> None:
    if row.error:
        request.future.set_exception(RowFailed(row.error))
    else:
        request.future.set_result(
            GenerationResult(row.text, len(request.prompt_ids), row.completion_tokens, row.finish_reason))


def _stop_token_ids(store) -> set[int]:
    """EOS ids from the generation config and tokenizer: the end-of-turn token (Llama 3 <|eot_id|>, ChatML <|im_end|>)."""
    ids = set()
    for source in (getattr(store.base, "generation_config", None), store.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if store.tokenizer.eos_token_id is not None:
        ids.add(store.tokenizer.eos_token_id)
    return ids

"""Three domain adapters and the base answer in ONE mixed batch, each row with its own adapter."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import DynamicCache

from qlora.serving.client import ServingClient
from qlora.serving.engine import GenerationRequest
from qlora.serving.model_store import ModelStore
from qlora.serving.running_batch import RunningBatch
from tests.support.serving import DOMAINS

PROMPT = [{"role": "user", "content": "Your order ships within"}]


@pytest.fixture(scope="module")
def loaded(embedded, serving_adapters):
    client = ServingClient(embedded.url, api_key=embedded.api_key)
    names = [f"{domain}@batch" for domain in DOMAINS]
    for name, domain in zip(names, DOMAINS):
        client.load_adapter(name, str(serving_adapters[domain]))
    yield client, names
    for name in names:
        client.unload_adapter(name)
    client.close()


def test_each_row_of_a_mixed_batch_uses_its_own_adapter(embedded, loaded, serving_base):
    client, names = loaded
    models = [*names, serving_base.name]  # three adapters + the base asked by its base name
    alone = {m: client.chat(m, PROMPT, max_tokens=12) for m in models}
    assert len({a.text for a in alone.values()}) == 4, "each adapter (and the base) must answer differently"

    results = {}
    threads = [threading.Thread(target=lambda m=m: results.__setitem__(m, client.chat(m, PROMPT, max_tokens=12)))
               for m in models]
    batches_before = len(embedded.engine.batch_log)
    with embedded.engine.paused():  # let all four queue up, so they are taken as one batch
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while embedded.engine.pending() < len(models) and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=60)

    new_batches = list(embedded.engine.batch_log)[batches_before:]
    assert len(new_batches) == 1
    size, adapters = new_batches[0]
    assert size == 4 and set(adapters) == {*names, None}  # None: the base row
    for m in models:
        assert results[m].model == m
        assert results[m].text == alone[m].text


def test_chat_many_keeps_order_and_left_padding_does_not_change_answers(embedded, loaded):
    client, names = loaded
    # Prompts of different lengths: the batch is left-padded, each answer must equal its solo answer.
    conversations = [[{"role": "user", "content": "Take the medicine " + "twice " * i}] for i in range(8)]
    singles = [client.chat(names[1], c, max_tokens=6).text for c in conversations]
    before = len(embedded.engine.batch_log)
    answers = []
    worker = threading.Thread(target=lambda: answers.extend(
        client.chat_many(names[1], conversations, concurrency=8, max_tokens=6)))
    with embedded.engine.paused():
        worker.start()
        deadline = time.monotonic() + 30
        while embedded.engine.pending() < len(conversations) and time.monotonic() < deadline:
            time.sleep(0.01)
    worker.join(timeout=60)
    assert list(embedded.engine.batch_log)[before:] == [(8, (names[1],) * 8)]
    assert [a.text for a in answers] == singles


def test_adapter_loads_do_not_wait_behind_queued_requests(embedded, loaded):
    client, names = loaded
    engine = embedded.engine
    workers = [threading.Thread(target=client.chat, args=(names[2], PROMPT), kwargs={"max_tokens": 4})
               for _ in range(3)]
    with engine.paused():
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        while engine.pending() < len(workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        batches_before = len(engine.batch_log)
        command = engine.run_exclusive(lambda: len(engine.batch_log))  # stands in for a load
    assert command.result(timeout=60) == batches_before  # it ran before the queued requests' batch
    for worker in workers:
        worker.join(timeout=60)
    assert len(engine.batch_log) == batches_before + 1


def _request(engine, text: str, adapter: str | None, max_tokens: int, **kwargs) -> GenerationRequest:
    return GenerationRequest(engine.tokenizer.encode(text), adapter, max_tokens, **kwargs)


def _solo(engine, text, adapter, max_tokens):
    return engine.submit(_request(engine, text, adapter, max_tokens)).result(timeout=60)


@pytest.mark.parametrize("joiner_text", ["Take", "Please tell me how long a refund takes " * 3])
def test_a_request_joins_a_decoding_batch_and_leaves_it_when_done(embedded, loaded, joiner_text):
    """Iteration-level scheduling: a request that arrives mid-decode joins the running rows (its
    prompt shorter or longer than theirs), is answered when it finishes, and no answer changes."""
    _, names = loaded
    engine = embedded.engine
    long_text, long_adapter = "The contract says", names[0]  # runs to its 40-token budget
    long_alone = _solo(engine, long_text, long_adapter, 40)
    short_alone = _solo(engine, joiner_text, names[1], 3)
    base_alone = _solo(engine, joiner_text, None, 5)

    finished: list[str] = []
    joiners: list[GenerationRequest] = []

    def submit_joiners(_delta: str) -> None:  # runs on the engine thread, between two decode steps
        if not joiners:
            joiners.extend([_request(engine, joiner_text, names[1], 3), _request(engine, joiner_text, None, 5)])
            for name, request in zip(("short", "base"), joiners):
                request.future.add_done_callback(lambda _f, name=name: finished.append(name))
                engine.submit(request)

    before = len(engine.batch_log)
    first = _request(engine, long_text, long_adapter, 40, on_delta=submit_joiners)
    first.future.add_done_callback(lambda _f: finished.append("long"))
    long_result = engine.submit(first).result(timeout=60)
    short_result, base_result = (r.future.result(timeout=60) for r in joiners)

    assert list(engine.batch_log)[before:] == [(1, (long_adapter,)), (2, (names[1], None))]  # one join, no new batch
    assert long_result.completion_tokens > short_result.completion_tokens
    assert finished.index("short") < finished.index("long")  # answered when done, not when the batch ends
    assert (long_result.text, short_result.text, base_result.text) == (long_alone.text, short_alone.text,
                                                                      base_alone.text)


def _logit_trace(store, engine, first: list, joins: dict[int, list]) -> dict[int, list[torch.Tensor]]:
    """Each request's next-token logits, step by step, with ``joins[k]`` joining after step k."""
    running = RunningBatch(store, engine.pad_id, engine.stop_token_ids)
    running.join(first)
    traces: dict[int, list[torch.Tensor]] = {}
    step = 0
    while len(running):
        for i, request in enumerate(running.requests):
            traces.setdefault(id(request), []).append(running.logits[i].clone())
        running.step()
        step += 1
        if step in joins:
            running.join(joins[step])
    return traces


def _uncached_logits(store, prompt: list[int], fed: list[int], adapter) -> torch.Tensor:
    """The reference: one forward over the whole sequence, no cache, no padding."""
    ids = torch.tensor([prompt + fed])
    return store.forward(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None], DynamicCache(), [adapter])[0]


def test_rows_that_join_or_leave_get_the_logits_of_an_uncached_forward(embedded, serving_base, serving_adapters):
    """The KV cache stacking and per-row positions are exact: at every step, every row's logits
    match one plain forward over its prompt and the tokens it was fed, whether the row was running
    when others joined, joined, or saw others leave. The store holds the NF4 values in float32
    linears, so the only difference left is float32 rounding (bitsandbytes' bf16 CPU kernel alone
    differs by ~0.01 between a cached step and an uncached pass)."""
    engine = embedded.engine
    store = ModelStore(serving_base, "nf4-dequantized", "float32")
    names = [f"{domain}@exact" for domain in DOMAINS]
    for name, domain in zip(names, DOMAINS):
        store.load_adapter(name, str(serving_adapters[domain]))
    specs = [("The contract says", names[0], 12), ("Take", names[1], 4),
             ("Take the medicine " * 6, None, 9), ("Please tell me how long a refund takes " * 3, names[2], 7)]
    rows = [_request(engine, text, adapter, budget) for text, adapter, budget in specs]
    with torch.inference_mode():
        traces = _logit_trace(store, engine, rows[:1], {2: rows[1:3], 5: rows[3:]})
        for request in rows:
            trace = traces[id(request)]
            assert len(trace) == request.max_tokens or trace[-1].argmax() in engine.stop_token_ids
            fed = [int(logits.argmax()) for logits in trace]  # greedy: what the row was fed next
            for step, logits in enumerate(trace):
                expected = _uncached_logits(store, request.prompt_ids, fed[:step], request.adapter)
                assert torch.allclose(logits, expected, atol=1e-4, rtol=0), (
                    request.adapter, step, float((logits - expected).abs().max()))

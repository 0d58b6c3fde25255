"""Three domain adapters and the base answer in ONE mixed batch, each row with its own adapter."""
from __future__ import annotations

import threading
import time

import pytest

from qlora.serving.client import ServingClient
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

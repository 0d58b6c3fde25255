"""Every vLLM API fact the platform relies on, checked against the embedded server through the shared client."""
from __future__ import annotations

import json

import httpx
import pytest

from qlora.serving.client import ServingClient, ServingError

HELLO = [{"role": "user", "content": "The lease may be ended"}]
AUTH = {"Authorization": "Bearer test-admin-key"}  # the backend wants the key on every /v1 route, as vLLM's --api-key


@pytest.fixture(scope="module")
def backend(embedded):
    with ServingClient(embedded.backend_url, api_key=embedded.api_key) as client:
        yield client


def test_backend_refuses_callers_without_the_key(embedded, serving_adapters):
    for path, body in [("/v1/load_lora_adapter", {"lora_name": "x@1", "lora_path": str(serving_adapters["legal-ko"])}),
                       ("/v1/chat/completions", {"model": "x", "messages": HELLO})]:
        response = httpx.post(f"{embedded.backend_url}{path}", json=body)
        assert response.status_code == 401, path
    assert embedded.backend_url.startswith("http://127.0.0.1:")


def test_backend_loads_only_from_the_adapters_root(backend, serving_adapters, tmp_path):
    import shutil

    outside = shutil.copytree(serving_adapters["legal-ko"], tmp_path / "outside")
    with pytest.raises(ServingError) as err:
        backend.load_adapter("contract-outside", str(outside))
    assert err.value.status == 403 and "outside the adapters root" in err.value.message
    assert "contract-outside" not in {c["id"] for c in backend.models()}


@pytest.fixture(scope="module")
def legal(backend, serving_adapters):
    backend.load_adapter("contract-legal", str(serving_adapters["legal-ko"]))
    yield "contract-legal"
    backend.unload_adapter("contract-legal")


def base_name(client: ServingClient) -> str:
    return next(card["id"] for card in client.models() if not card.get("parent"))


def test_health_is_200_with_empty_body(embedded):
    response = httpx.get(f"{embedded.backend_url}/health")
    assert response.status_code == 200 and response.content == b""


def test_models_lists_base_then_one_card_per_adapter(backend, legal, serving_base, serving_adapters):
    cards = {card["id"]: card for card in backend.models()}
    base = cards[serving_base.name]
    assert base["root"] == str(serving_base) and base["parent"] is None
    assert cards[legal]["root"] == str(serving_adapters["legal-ko"])
    assert cards[legal]["parent"] == serving_base.name


def test_load_answers_200_plain_text(embedded, serving_adapters):
    response = httpx.post(f"{embedded.backend_url}/v1/load_lora_adapter",
                          json={"lora_name": "contract-plain", "lora_path": str(serving_adapters["cs-support"])}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Success: LoRA adapter 'contract-plain' added successfully."
    unload = httpx.post(f"{embedded.backend_url}/v1/unload_lora_adapter", json={"lora_name": "contract-plain"}, headers=AUTH)
    assert unload.status_code == 200 and "contract-plain" not in {c["id"] for c in ServingClient(
        embedded.backend_url, api_key=embedded.api_key).models()}


def test_loading_a_name_twice_is_400(backend, legal, serving_adapters):
    with pytest.raises(ServingError) as err:
        backend.load_adapter(legal, str(serving_adapters["medical-ko"]))
    assert err.value.status == 400
    assert err.value.message == f"The lora adapter '{legal}' has already been loaded."


def test_bad_path_is_404(backend, qlora_home):
    nowhere = qlora_home / "artifacts" / "adapters" / "nowhere"
    with pytest.raises(ServingError) as err:
        backend.load_adapter("contract-missing", str(nowhere))
    assert err.value.status == 404
    assert err.value.message == f"Loading lora contract-missing failed: No adapter found for {nowhere}"


def test_unloading_an_unknown_name_is_404(backend):
    with pytest.raises(ServingError) as err:
        backend.unload_adapter("never-loaded")
    assert err.value.status == 404
    assert err.value.message == "The lora adapter 'never-loaded' cannot be found."


def test_rank_above_max_lora_rank_is_refused_with_vllms_message(backend, serving_adapters):
    with pytest.raises(ServingError) as err:
        backend.load_adapter("contract-big", str(serving_adapters["rank-too-big"]))
    assert err.value.status == 400
    assert "LoRA rank 64 is greater than max_lora_rank 16." in err.value.message
    assert "contract-big" not in {c["id"] for c in backend.models()}


def test_modules_to_save_is_refused(backend, serving_adapters):
    with pytest.raises(ServingError) as err:
        backend.load_adapter("contract-head", str(serving_adapters["with-lm-head"]))
    assert err.value.status == 400
    assert "vLLM only supports modules_to_save being None." in err.value.message


def test_model_field_picks_the_adapter(backend, legal):
    base = backend.chat(base_name(backend), HELLO, max_tokens=8)
    adapted = backend.chat(legal, HELLO, max_tokens=8)
    assert adapted.model == legal and base.model == base_name(backend)
    assert adapted.text != base.text


def test_chat_template_of_the_base_is_applied(backend, serving_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(serving_base)
    expected = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    answer = backend.chat(base_name(backend), HELLO, max_tokens=2)
    assert answer.prompt_tokens == len(tokenizer(expected, add_special_tokens=False)["input_ids"])


def test_max_tokens_and_stop_are_honoured(backend, legal):
    long = backend.chat(legal, HELLO, max_tokens=12)
    assert long.completion_tokens == 12 and long.finish_reason == "length"
    stop = long.text[3:6]
    cut = backend.chat(legal, HELLO, max_tokens=12, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == long.text[: long.text.index(stop)]


def test_temperature_samples_and_seed_repeats(embedded, legal):
    def answer(temperature, seed):
        body = {"model": legal, "messages": HELLO, "max_tokens": 8, "temperature": temperature, "seed": seed}
        return httpx.post(f"{embedded.backend_url}/v1/chat/completions", json=body, headers=AUTH).json()["choices"][0]
    sampled = {answer(1.5, seed)["message"]["content"] for seed in range(5)}
    assert len(sampled) > 1
    assert answer(1.5, 3) == answer(1.5, 3)
    assert len({answer(0.0, seed)["message"]["content"] for seed in range(3)}) == 1


def test_streaming_sends_the_same_text_as_sse(embedded, backend, legal):
    whole = backend.chat(legal, HELLO, max_tokens=10)
    body = {"model": legal, "messages": HELLO, "max_tokens": 10, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{embedded.backend_url}/v1/chat/completions", json=body, headers=AUTH) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole.text
    assert chunks[-1]["usage"]["completion_tokens"] == whole.completion_tokens


def test_text_completions_route(embedded, legal):
    response = httpx.post(f"{embedded.backend_url}/v1/completions",
                          json={"model": legal, "prompt": "The lease", "max_tokens": 5, "temperature": 0}, headers=AUTH)
    data = response.json()
    assert response.status_code == 200 and data["object"] == "text_completion"
    assert data["usage"]["completion_tokens"] <= 5 and isinstance(data["choices"][0]["text"], str)


@pytest.mark.parametrize(
    "body, status, needle",
    [
        (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "The model `nope` does not exist."),
        (b'{"model": "x", "messages": [', 400, "Malformed JSON"),
        (b'{"model": "BASE", "messages": [{"role": "user", "content": "' + b"word " * 400 + b'"}]}', 400,
         "maximum context length is 256 tokens"),
        (b'{"model": "BASE", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}', 400,
         "'max_tokens' is too large"),
        (b'{"model": "BASE", "messages": []}', 400, "messages"),
    ],
    ids=["unknown-model", "malformed-json", "prompt-over-context", "max-tokens-over-context", "no-messages"],
)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(embedded, backend, body, status, needle):
    body = body.replace(b"BASE", base_name(backend).encode())
    response = httpx.post(f"{embedded.backend_url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json", **AUTH})
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["code"] == status
    assert backend.chat(base_name(backend), HELLO, max_tokens=2).completion_tokens >= 1

"""Property: no request body can hurt the server or another request.

Hypothesis builds request bodies (well-formed ones with random sampling values, bodies with one
field out of vLLM's limits, and raw junk) and sends them through the router of a running embedded
server while other clients keep sending well-formed requests. Every bad body must get a 4xx with
vLLM's wording, every good one a 200, the concurrent clients must all succeed, and the server
must still be up at the end.
"""
from __future__ import annotations

import threading

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

INT64 = 2 ** 63
MAX_MODEL_LEN = 256  # the test base's max_position_embeddings
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)

GOOD_FIELDS = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.sampled_from([-1, 0, 1, 5, 50]),
    "seed": st.integers(-INT64, INT64 - 1),
    "max_tokens": st.integers(1, 3),
    "stop": st.one_of(st.none(), TEXT, st.lists(TEXT, max_size=3)),
    "presence_penalty": st.floats(-2, 2),
}
# (field, bad values, what vLLM's message says, status)
BAD_FIELDS = [
    ("temperature", st.floats(max_value=-1e-6, allow_infinity=False), "temperature must be non-negative", 400),
    ("temperature", TEXT, "temperature: Input should be a valid number", 400),
    ("top_p", st.one_of(st.floats(max_value=0, allow_infinity=False), st.floats(min_value=1.000001,
                                                                                 allow_infinity=False)),
     "top_p must be in (0, 1]", 400),
    ("top_k", st.integers(max_value=-2), "top_k must be -1 (disable), or at least 1", 400),
    ("n", st.integers(min_value=2), "n must be 1 on this server", 400),
    ("n", st.integers(max_value=0), "n must be at least 1", 400),
    ("max_tokens", st.integers(max_value=0), "max_tokens must be at least 1", 400),
    ("max_tokens", st.integers(min_value=MAX_MODEL_LEN), "'max_tokens' is too large", 400),
    ("seed", st.one_of(st.integers(min_value=INT64), st.integers(max_value=-INT64 - 1)), "seed must be in", 400),
    ("stop", st.lists(TEXT, min_size=17, max_size=20), "stop may hold at most 16 strings", 400),
    ("model", TEXT.map(lambda s: f"no-such-{s}"), "does not exist.", 404),
]


@st.composite
def good_body(draw, base: str) -> tuple[str, dict]:
    chat = draw(st.booleans())
    body = {"model": base}
    body.update({"messages": [{"role": "user", "content": draw(TEXT)}]} if chat
                else {"prompt": draw(TEXT.filter(bool))})
    body.update(draw(st.fixed_dictionaries({}, optional=GOOD_FIELDS)))
    body.setdefault("max_tokens", 2)
    return ("/v1/chat/completions" if chat else "/v1/completions"), body


def encoded(route_body) -> tuple[str, bytes]:
    route, body = route_body
    return route, httpx.Request("POST", "/", json=body).content


def good_case(base: str):
    """(route, raw body, expected status, expected message fragment or None)."""
    return good_body(base).map(lambda rb: (*encoded(rb), 200, None))


def bad_case(base: str, field: str, values, message: str, status: int):
    """A good body with one field out of vLLM's limits."""
    @st.composite
    def build(draw):
        route, body = draw(good_body(base))
        body[field] = draw(values)
        return (*encoded((route, body)), status, message)
    return build()


def junk_case():
    raw = st.one_of(st.binary(max_size=64), st.sampled_from([b"[]", b"1", b'"x"', b"null", b"{", b'{"model": 1}']))
    return st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw, st.just(400), st.none())


def cases(base: str) -> list[tuple[str, object, int]]:
    """(what, strategy, examples): every kind of bad body gets its own examples, so none goes untried."""
    return [("good", good_case(base), 20), ("junk", junk_case(), 10),
            *[(f"bad {field}", bad_case(base, field, values, message, status), 5)
              for field, values, message, status in BAD_FIELDS]]


def test_bad_bodies_get_4xx_in_vllms_words_while_good_traffic_succeeds(embedded):
    base = httpx.get(f"{embedded.url}/v1/models").json()["data"][0]["id"]
    steady = {"model": base, "messages": [{"role": "user", "content": "The lease"}], "max_tokens": 2}
    stop, statuses = threading.Event(), []

    def well_formed_traffic():
        with httpx.Client(base_url=embedded.url, timeout=120) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/chat/completions", json=steady).status_code)

    workers = [threading.Thread(target=well_formed_traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    fuzz = httpx.Client(base_url=embedded.url, timeout=120, headers={"content-type": "application/json"})

    def one_body(case):
        route, raw, status, message = case
        response = fuzz.post(route, content=raw)
        assert response.status_code == status, (raw[:300], response.text[:300])
        if status != 200:
            error = response.json()["error"]
            assert error["code"] == status and error["message"]
            assert message is None or message in error["message"], (raw[:300], error["message"])

    try:
        for what, strategy, examples in cases(base):
            settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))(given(case=strategy)(one_body))()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        fuzz.close()
    assert statuses and set(statuses) == {200}
    assert httpx.get(f"{embedded.url}/health").status_code in (200, 503)  # up (503 only names an alias)
    assert httpx.post(f"{embedded.url}/v1/chat/completions", json=steady).status_code == 200

"""Arm assignment: deterministic and sticky per (experiment, user), split by the alias weight; the SSE sniffer."""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from qlora.ab.assignment import CANDIDATE, assign_arm, user_hash, user_point
from qlora.serving.arms import Experiment, Experiments, StreamSniffer, user_key


@given(experiment=st.text(min_size=1, max_size=30), user=st.text(max_size=60), share=st.floats(0.0, 1.0))
@settings(max_examples=200, deadline=None)
def test_assignment_is_deterministic_and_monotone_in_the_share(experiment, user, share):
    arm = assign_arm(experiment, user, share)
    assert arm == assign_arm(experiment, user, share)  # sticky: nothing stored, the same answer every time
    if arm == CANDIDATE:  # a larger candidate share never moves a candidate user back to control
        assert assign_arm(experiment, user, min(1.0, share + 0.1)) == CANDIDATE
    assert 0.0 <= user_point(experiment, user) < 1.0


def test_split_follows_the_share_and_experiments_reshuffle():
    users = [f"user-{i}" for i in range(20_000)]
    first = [assign_arm("exp-a", u, 0.2) for u in users]
    assert abs(first.count(CANDIDATE) / len(users) - 0.2) < 0.015  # 5 standard errors
    second = [assign_arm("exp-b", u, 0.2) for u in users]
    overlap = sum(a == b == CANDIDATE for a, b in zip(first, second)) / first.count(CANDIDATE)
    assert abs(overlap - 0.2) < 0.03  # independent of the previous experiment's arms


def test_user_key_order_and_hash_hides_the_key():
    assert user_key({"user": "kim@example.com"}, {"X-QLora-User": "h"}, "10.0.0.1", "X-QLora-User") == "user:kim@example.com"
    assert user_key({}, {"X-QLora-User": "h"}, "10.0.0.1", "X-QLora-User") == "header:h"
    assert user_key({"user": ""}, {}, "10.0.0.1", "X-QLora-User") == "addr:10.0.0.1"
    assert "kim" not in user_hash("user:kim@example.com") and len(user_hash("x")) == 16


def test_experiments_persist_and_allow_one_per_alias(tmp_path):
    table = Experiments(tmp_path / "experiments.json")
    table.start(Experiment("e1", "legal-ko", "legal-ko@v1", "legal-ko@v2"))
    try:
        table.start(Experiment("e2", "legal-ko", "legal-ko@v1", "legal-ko@v3"))
        raise AssertionError("a second experiment on one alias must be refused")
    except ValueError as exc:
        assert "one experiment per domain" in str(exc)
    assert Experiments(tmp_path / "experiments.json").get("legal-ko").experiment_id == "e1"  # after a restart
    assert table.stop("legal-ko").candidate == "legal-ko@v2" and Experiments(tmp_path / "experiments.json").all() == {}


@given(cuts=st.lists(st.integers(1, 40), max_size=8))
@settings(max_examples=50, deadline=None)
def test_stream_sniffer_reads_id_text_and_usage_however_the_bytes_are_cut(cuts):
    events = [{"id": "chatcmpl-1", "choices": [{"delta": {"role": "assistant", "content": ""}}]},
              {"id": "chatcmpl-1", "choices": [{"delta": {"content": "임대 "}}]},
              {"id": "chatcmpl-1", "choices": [{"delta": {"content": "계약"}, "finish_reason": "stop"}]},
              {"id": "chatcmpl-1", "choices": [], "usage": {"completion_tokens": 3}}]
    raw = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
    sniffer, position = StreamSniffer(), 0
    for cut in cuts:
        sniffer.feed(raw[position:position + cut])
        position += cut
    sniffer.feed(raw[position:])
    assert (sniffer.response_id, sniffer.text, sniffer.completion_tokens) == ("chatcmpl-1", "임대 계약", 3)

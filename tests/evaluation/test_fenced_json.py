"""Format compliance: the strict parse stays the gate's metric; the fenced count shows whether
the fence or the content fails."""
import json
from types import SimpleNamespace

from hypothesis import given, strategies as st

from qlora.evaluation.eval_set import EvalCase
from qlora.evaluation.metrics import is_json_compliant, is_json_in_fence
from qlora.evaluation.scoring import aggregate, score_rows

objects = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=10), st.booleans()),
                          min_size=1, max_size=4)
prose = st.text(alphabet=st.characters(blacklist_characters="`{}[]\"", blacklist_categories=("Cs",)), max_size=30)


@given(objects, prose, prose, st.sampled_from(["json", "JSON", ""]))
def test_a_fenced_object_passes_the_fenced_count_and_fails_the_strict_parse(obj, before, after, lang):
    answer = f"{before}\n```{lang}\n{json.dumps(obj, ensure_ascii=False)}\n```\n{after}"
    assert is_json_in_fence(answer)
    assert not is_json_compliant(answer)


@given(objects)
def test_bare_json_passes_both(obj):
    text = json.dumps(obj, ensure_ascii=False)
    assert is_json_compliant(text) and is_json_in_fence(text)


def test_a_fence_around_broken_json_fails_both():
    broken = '```json\n{"status": "ok", "answer": }\n```'
    assert not is_json_in_fence(broken) and not is_json_compliant(broken)
    assert not is_json_in_fence("```\n42\n```")  # a scalar is not the structured answer


def test_report_counts_fenced_answers_separately():
    cases = [EvalCase(source="t.jsonl", line=i, messages=({"role": "user", "content": "q"},), expected_output='{"a": 1}',
                      expects_json=True, should_refuse=False) for i in range(1, 5)]
    answers = ['{"a": 1}', '```json\n{"a": 1}\n```', 'Here it is:\n```\n{"a": 1}\n```', "a: 1"]
    outcomes = [SimpleNamespace(text=a, latency_s=0.1, completion_tokens=5) for a in answers]
    metrics = aggregate(score_rows(cases, outcomes, ["sorry"]), outcomes, wall_s=1.0)
    assert metrics["format_compliance"] == 0.25
    assert metrics["format_compliance_fenced"] == 0.75

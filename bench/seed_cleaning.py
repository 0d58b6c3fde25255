"""The seed guide's data-cleaning code (qlora-operations-guide.ko.txt, "데이터 수집과 정제 파이프라인"),
copied verbatim for comparison in bench/cleaning.py only. Not used by the platform.

The guide's last lines load "raw_instructions.json" at import; here they are the body of
`run_seed_pipeline(raw_data)` (unchanged apart from the indentation and the file load).
"""
import json
import hashlib
from typing import List, Dict

def deduplicate_by_content(samples: List[Dict]) -> List[Dict]:
    """입력-출력 쌍의 해시 기반 중복 제거"""
    seen = set()
    unique = []
    for s in samples:
        key = hashlib.sha256(
            (s["instruction"] + s["output"]).encode()
        ).hexdigest()
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique

def validate_instruction_format(sample: Dict) -> bool:
    """Llama 3 chat template에 맞는 포맷인지 검증"""
    required_keys = {"instruction", "output"}
    if not required_keys.issubset(sample.keys()):
        return False
    if len(sample["instruction"].strip()) < 10:
        return False
    if len(sample["output"].strip()) < 5:
        return False
    return True

def filter_pii(text: str) -> str:
    """이메일, 전화번호 등 PII 패턴 마스킹"""
    import re
    text = re.sub(r'\b[\w.+-]+@[\w-]+\.[\w.-]+\b', '[EMAIL]', text)
    text = re.sub(r'\b\d{3}[-.]?\d{4}[-.]?\d{4}\b', '[PHONE]', text)
    text = re.sub(r'\b\d{6}-\d{7}\b', '[RRN]', text)  # 주민등록번호
    return text


def run_seed_pipeline(raw_data: List[Dict]) -> List[Dict]:
    # 파이프라인 실행
    cleaned = [s for s in raw_data if validate_instruction_format(s)]
    cleaned = deduplicate_by_content(cleaned)
    cleaned = [
        {**s, "instruction": filter_pii(s["instruction"]),
         "output": filter_pii(s["output"])}
        for s in cleaned
    ]
    return cleaned

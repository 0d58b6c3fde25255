"""Helpers for the training tests: a toy templated domain in the warehouse and a fast config."""
from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import pandas as pd
import yaml

from qlora.core.paths import REPO_ROOT, paths
from qlora.core.warehouse import Warehouse

CITIES = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "수원"]


def toy_messages(n: int, seed: int = 0) -> list[list[dict]]:
    """A templated task a tiny model can learn: the answer copies the order number and city."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        order, city = rng.randint(100, 999), rng.choice(CITIES)
        rows.append([
            {"role": "user", "content": f"배송 조회: 주문 {order}, 도착 도시 {city}"},
            {"role": "assistant", "content": f"주문 {order}번은 {city} 물류센터에서 출고되어 내일 도착합니다."},
        ])
    return rows


def domain_seed(domain: str) -> int:
    return zlib.crc32(domain.encode())  # stable across processes, unlike hash()


def write_split(domain: str, n_train: int = 48, n_eval: int = 8) -> None:
    messages = toy_messages(n_train + n_eval, seed=domain_seed(domain))
    frame = pd.DataFrame({
        "domain": domain,
        "row_id": [f"{domain}-{i:04d}" for i in range(len(messages))],
        "split": ["train"] * n_train + ["eval"] * n_eval,
        "messages_json": [json.dumps(m, ensure_ascii=False) for m in messages],
    })
    Warehouse(paths().warehouse).replace_partition("train_eval_split", "domain", domain, frame)


def fast_config(tmp_dir: Path, **overrides) -> Path:
    """tiny-cpu.yaml with overrides, written where the serving rank check finds no vllm.yaml."""
    raw = yaml.safe_load((REPO_ROOT / "configs" / "qlora" / "tiny-cpu.yaml").read_text())
    raw.update({"max_steps": 60, "logging_steps": 5, "save_steps": 20, **overrides})
    target = tmp_dir / "configs" / "qlora" / "test.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw))
    return target

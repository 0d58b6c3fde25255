"""Re-sync a backend with the router's state: every version an alias or a router load put there is
loaded again when the backend lacks it (a restarted vLLM or embedded server keeps no runtime loads).

Paths come from the router's record of loads (``adapters.json``); a version an alias names that was
never recorded (the record was lost) is looked for at ``<adapters root>/<domain>/<version>``.
"""
from __future__ import annotations

import asyncio
import logging
import time

import httpx

from qlora.serving.adapters import AdapterOutsideRoot, adapter_path_under_root
from qlora.serving.metrics import split_versioned

log = logging.getLogger(__name__)


def wanted_adapters(router) -> dict[str, str]:
    """Versioned name -> path of everything the backend should hold."""
    wanted = dict(router.loaded.all()) if router.loaded is not None else {}
    for weights in router.aliases.all().values():
        for target in weights:
            if target not in wanted:
                domain, version = split_versioned(target)
                candidate = router.adapters_root / domain / version
                try:
                    if (adapter_path_under_root(str(candidate), router.adapters_root) / "adapter_config.json").is_file():
                        wanted[target] = str(candidate)
                except AdapterOutsideRoot:
                    continue
    return wanted


async def resync(router) -> dict:
    """Load what is missing; returns (and keeps in ``router.last_sync``) what was found and done."""
    async with router.state_lock:
        return await _resync(router)


async def _resync(router) -> dict:
    present = {c["id"] for c in await router.backend_cards()}
    wanted = wanted_adapters(router)
    restored, failed = [], {}
    for name, path in wanted.items():
        if name in present:
            continue
        response = await router.forward("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            restored.append(name)
            router.metrics.version_loaded(name, path)
        else:
            failed[name] = response.text[:300]
            log.warning("re-sync could not load %s from %s: %s", name, path, response.text[:300])
    if restored:
        log.warning("re-sync: the backend had lost %s; loaded again from the router's state", restored)
    router.metrics.sync_versions(await router.backend_cards())
    unknown = sorted(t for w in router.aliases.all().values() for t in w if t not in wanted and t not in present)
    router.last_sync = {"at": time.time(), "restored": restored, "failed": failed, "no_path_known": unknown}
    return router.last_sync


async def resync_forever(router, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await resync(router)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            router.last_sync = {"at": time.time(), "error": f"backend unreachable ({type(exc).__name__})"}

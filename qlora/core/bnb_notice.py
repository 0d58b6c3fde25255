"""Drop one known-noise log line of bitsandbytes' CPU backend, and nothing else it logs.

At import, bitsandbytes tries to fetch an optional CPU kernel from the Hugging Face hub
(`kernels-community`) and logs a warning when it cannot: always, in this offline world, and on
every command that loads a 4-bit model. The fallback kernel is the one we test with, so the
line says nothing to act on. Call before the first import of transformers' quantizer or
bitsandbytes; the filter sits on that one logger and matches that one message.
"""
from __future__ import annotations

import logging

LOGGER = "bitsandbytes.backends.cpu.ops"
NOISE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropHubKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NOISE)


def silence_hub_kernel_notice() -> None:
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(f, _DropHubKernelNotice) for f in logger.filters):
        logger.addFilter(_DropHubKernelNotice())


# Importing this module is enough (`from qlora.core import bnb_notice  # noqa: F401`, in
# qlora/training/runner.py, plan.py, merge.py, qlora/serving/model_store.py, qlora/modeling/base_checks.py), so the
# modules that load bitsandbytes keep their imports at the top.
silence_hub_kernel_notice()

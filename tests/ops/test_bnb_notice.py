"""The bitsandbytes hub-kernel notice is dropped; everything else that logger says still shows."""
from __future__ import annotations

import logging
import subprocess
import sys

from qlora.core.bnb_notice import LOGGER, NOISE, silence_hub_kernel_notice
from qlora.core.paths import REPO_ROOT


def test_only_the_known_notice_is_dropped(caplog):
    silence_hub_kernel_notice()
    silence_hub_kernel_notice()  # idempotent: one filter
    logger = logging.getLogger(LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...",
                       "No module named 'kernels'")  # as bitsandbytes logs it
        logger.warning("something else bitsandbytes wants you to know")
    assert [r.getMessage() for r in caplog.records] == ["something else bitsandbytes wants you to know"]


def test_training_imports_print_no_notice():
    done = subprocess.run([sys.executable, "-c", "import qlora.training.runner, bitsandbytes"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert NOISE not in done.stderr

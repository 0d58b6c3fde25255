"""How many torch threads a CPU training or pretraining run should use on a shared box.

Two spinning torch threads per process ran 5x slower than one on 2 cores that other test suites
were also using; alone on the same 2 cores, two threads are ~1.5x faster than one. So: one thread
when the CPUs look busy, else torch's default. Busy means either the 1-minute load average is at
the core count (it catches runs that alternate with each other, as two concurrent domain runs
do: the prod-profile test's two concurrent runs took 695 s of setup inside the full suite with
only the runnable-task check, 507 s with both, run alone, the tiny base's build included) or other
work is runnable on every core right now (/proc/loadavg's 4th field, sampled). The load average
lags by a minute, so a pipeline that runs one step at a time (`qlora demo`) says so with
QLORA_TORCH_THREADS, which, when set, wins.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

THREADS_ENV = "QLORA_TORCH_THREADS"


def _runnable_tasks() -> int:
    """Runnable tasks system-wide, this reader included (Linux); 0 where it cannot be read."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0


def runnable_elsewhere(samples: int = 5, interval_s: float = 0.05) -> int:
    """Tasks other than this one competing for a CPU now (median of a few samples)."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        counts.append(max(_runnable_tasks() - 1, 0))
    return int(statistics.median(counts))


def choose_threads(cpus: int | None = None) -> int | None:
    """The thread count to set, or None for torch's default."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if explicit:
        try:
            return max(int(explicit), 1)
        except ValueError:
            raise ValueError(f"{THREADS_ENV}={explicit!r}: expected a whole number of threads") from None
    cpus = cpus or os.cpu_count() or 1
    return 1 if _load_average() >= cpus or runnable_elsewhere() >= cpus else None


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 0.0


def limit_threads_when_busy() -> int:
    """Apply choose_threads() to torch on a CPU-only host; returns the thread count torch now uses."""
    import torch

    if not torch.cuda.is_available():
        threads = choose_threads()
        if threads is not None:
            torch.set_num_threads(threads)
    return torch.get_num_threads()

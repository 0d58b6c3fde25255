"""Run a function over a stream of chunks in a few threads, results in input order.

The cleaning kernels (Arrow's RE2 scans, joins, lengths) release the GIL, so threads use every
core while one of them is in Python (hashing, masking). At most `2 x workers` chunks are in
flight: a streamed input (a file read batch by batch) is not read all at once, and the
memory each chunk uses is freed and reused instead of touched fresh.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_in_order(fn: Callable[[In], Out], items: Iterable[In], workers: int | None = None) -> Iterator[Out]:
    """fn(item) for each item, computed in `workers` threads (default: one per core; 0: in the
    calling thread, no pool), yielded in order.

    `items` is consumed in the calling thread, so producing the next chunk (parsing,
    encoding) overlaps with the work on the previous ones."""
    if workers is None:
        workers = worker_count()
    if workers == 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="clean") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

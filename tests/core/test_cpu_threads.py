"""Torch threads on a shared CPU box: one when other work is runnable now, else torch's default."""
from __future__ import annotations

import pytest

from qlora.core import cpu_threads


@pytest.fixture()
def runnable(monkeypatch):
    """Fake /proc/loadavg's runnable count (this reader included), one value per sample."""
    def use(*counts: int):
        values = iter(counts)
        monkeypatch.setattr(cpu_threads, "_runnable_tasks", lambda: next(values))
    monkeypatch.delenv(cpu_threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(cpu_threads, "_load_average", lambda: 0.5)
    return use


def test_idle_box_keeps_torch_default(runnable):
    runnable(1, 1, 2, 1, 1)  # only the reader (a stray task once)
    assert cpu_threads.choose_threads(cpus=2) is None


def test_neighbours_on_every_core_mean_one_thread(runnable):
    runnable(3, 3, 4, 1, 3)  # median 2 others on 2 cores
    assert cpu_threads.choose_threads(cpus=2) == 1


def test_a_busy_last_minute_means_one_thread(runnable, monkeypatch):
    runnable(1, 1, 1, 1, 1)  # between two bursts of a concurrent run
    monkeypatch.setattr(cpu_threads, "_load_average", lambda: 2.4)
    assert cpu_threads.choose_threads(cpus=2) == 1


def test_a_single_spike_is_not_a_neighbour(runnable):
    runnable(1, 1, 6, 1, 1)
    assert cpu_threads.choose_threads(cpus=2) is None


def test_explicit_setting_wins_and_a_bad_one_is_named(runnable, monkeypatch):
    runnable(9, 9, 9, 9, 9)
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "2")
    assert cpu_threads.choose_threads(cpus=2) == 2
    monkeypatch.setenv(cpu_threads.THREADS_ENV, "two")
    with pytest.raises(ValueError, match="QLORA_TORCH_THREADS='two'"):
        cpu_threads.choose_threads(cpus=2)


def test_reads_the_real_count_on_linux():
    assert cpu_threads._runnable_tasks() >= 1  # at least this test runs


def test_limit_applies_the_choice_to_torch(runnable):
    import torch

    before = torch.get_num_threads()
    try:
        runnable(5, 5, 5, 5, 5)
        assert cpu_threads.limit_threads_when_busy() == 1
    finally:
        torch.set_num_threads(before)

"""Trainers use every granted core unless told otherwise (`num_threads`)."""

import os
import threading
from pathlib import Path

import pytest
import torch

from lvlmrec.device import available_cpus
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.fusion import AttentionFusion
from lvlmrec.represent import training
from lvlmrec.represent.training import cpu_threads


def test_cpu_threads_default_is_every_idle_core_and_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(training, "busy_elsewhere", lambda: 0.1)  # a quiet machine
    with cpu_threads("cpu"):
        assert torch.get_num_threads() == available_cpus()
    with cpu_threads("cpu", 1):
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(training, "busy_elsewhere", lambda: 20.0)  # a busy one
    with cpu_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_idle_cores_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(training, "busy_elsewhere", lambda: None)  # no /proc/stat
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert training.idle_cores() == available_cpus()
    monkeypatch.setattr(os, "getloadavg", lambda: (20.0, 20.0, 20.0))
    assert training.idle_cores() == 1


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc/stat")
def test_this_process_own_work_is_not_counted_as_busy(monkeypatch):
    """A stage that just kept every core busy here (its threads) leaves them idle for the
    next: only other processes' CPU time counts."""
    monkeypatch.setattr(training, "_BUSY_MEMO_SECONDS", 0.0)
    before = training.busy_elsewhere(0.3)  # other processes (none, on a quiet machine)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        busy = training.busy_elsewhere(0.3)
    finally:
        stop.set()
        worker.join()
    # our thread kept a core busy; counted, it would add about 1.0
    assert before is not None and busy is not None and 0.0 <= busy < before + 0.6


def test_trainers_take_num_threads():
    assert AttentionFusion().num_threads is None and BPRMF().num_threads is None
    assert AttentionFusion(num_threads=1).get_params()["num_threads"] == 1

"""Trainers use every granted core unless told otherwise (`num_threads`)."""

import os

import torch

from lvlmrec.device import available_cpus
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.fusion import AttentionFusion
from lvlmrec.represent.training import cpu_threads


def test_cpu_threads_default_is_every_idle_core_and_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))  # a quiet machine
    with cpu_threads("cpu"):
        assert torch.get_num_threads() == available_cpus()
    with cpu_threads("cpu", 1):
        assert torch.get_num_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (20.0, 20.0, 20.0))  # a busy one
    with cpu_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_trainers_take_num_threads():
    assert AttentionFusion().num_threads is None and BPRMF().num_threads is None
    assert AttentionFusion(num_threads=1).get_params()["num_threads"] == 1

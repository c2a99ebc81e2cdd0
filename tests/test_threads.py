"""Trainers use every granted core unless told otherwise (`num_threads`)."""

import torch

from lvlmrec.device import available_cpus
from lvlmrec.represent.cf import BPRMF
from lvlmrec.represent.fusion import AttentionFusion
from lvlmrec.represent.training import cpu_threads


def test_cpu_threads_default_is_every_core_and_restores():
    before = torch.get_num_threads()
    with cpu_threads("cpu"):
        assert torch.get_num_threads() == available_cpus()
    with cpu_threads("cpu", 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_trainers_take_num_threads():
    assert AttentionFusion().num_threads is None and BPRMF().num_threads is None
    assert AttentionFusion(num_threads=1).get_params()["num_threads"] == 1

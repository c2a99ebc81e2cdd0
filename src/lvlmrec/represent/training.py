"""Shared pieces of every trained model: seeding and early stopping on validation.

Models train on training interactions only; the validation split decides when to stop and
which epoch's weights to keep. Test interactions never reach a trainer.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class EarlyStopping:
    """Keep the best validation score and the state that produced it; stop after
    `patience` evaluations without improvement."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: Any = None
        self.history: list[tuple[int, float]] = []
        self._bad = 0

    def step(self, epoch: int, score: float, state: Any = None) -> bool:
        """Record one evaluation; returns True when training should stop."""
        self.history.append((epoch, float(score)))
        if score > self.best_score + self.min_delta:
            self.best_score = float(score)
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(state)
            self._bad = 0
        else:
            self._bad += 1
        return self._bad >= self.patience


def idle_cores() -> int:
    """The granted cores that other processes leave idle (1-minute load average), at least
    one: on a busy machine, threads that wait on each other cost far more than they gain
    (docs/benchmarks.md, "CPU speed")."""
    import os

    from lvlmrec.device import available_cpus

    cpus = available_cpus()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cpus
    return max(1, min(cpus, round(cpus + 1 - load)))  # +1: this process's own share


@contextlib.contextmanager
def cpu_threads(device: str, limit: int | None = None) -> Iterator[None]:
    """Run torch CPU work on `limit` intra-op threads (None: every granted core that is idle,
    all of them on a quiet machine), then restore the previous setting. No effect on other
    devices."""
    import torch

    from lvlmrec.device import set_cpu_threads

    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        set_cpu_threads(min(limit or idle_cores(), set_cpu_threads()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch CPU work on `n` threads (None: the process setting), then restore it: a
    model's `num_threads` (small models gain nothing from more, and lose on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def adam(params: Iterable[Any], lr: float, weight_decay: float = 0.0) -> Any:
    """Adam with torch's fused kernel (CPU and CUDA): one pass over each parameter instead of
    one per arithmetic step. SMORE trains its 38k x 768 feature tables, so at the study's
    scale the update is a large share of a step (docs/benchmarks.md, "CPU speed")."""
    import torch

    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)

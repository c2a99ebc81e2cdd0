"""Shared pieces of every trained model: seeding and early stopping on validation.

Models train on training interactions only; the validation split decides when to stop and
which epoch's weights to keep. Test interactions never reach a trainer.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
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
    """The granted cores that other processes leave idle, at least one: on a busy machine,
    threads that wait on each other cost far more than they gain (docs/benchmarks.md, "CPU
    speed"). Measured as other processes' CPU time on the granted cores over a short window
    (Linux `/proc/stat`, less this process's own time, so the work of a stage that just ran
    here does not count, as it would in the load average); elsewhere the 1-minute load
    average."""
    from lvlmrec.device import available_cpus

    cpus = available_cpus()
    others = busy_elsewhere()
    if others is None:
        try:
            others = max(0.0, os.getloadavg()[0] - 1)  # -1: this process's own share
        except OSError:  # not available on this platform
            return cpus
    return max(1, min(cpus, math.floor(cpus - others + 0.5)))


#: (perf_counter time, value) of the last `busy_elsewhere` sample: a search fitting many
#: trials samples once every few seconds, not once per fit
_BUSY_MEMO: list[tuple[float, float | None]] = []
_BUSY_MEMO_SECONDS = 5.0


def busy_elsewhere(window: float = 0.1) -> float | None:
    """Cores' worth of CPU time that other processes used on this process's granted cores
    over `window` seconds (Linux: `/proc/stat` less this process's own CPU time); None
    where `/proc/stat` cannot be read."""
    now = time.perf_counter()
    if _BUSY_MEMO and now - _BUSY_MEMO[0][0] < _BUSY_MEMO_SECONDS:
        return _BUSY_MEMO[0][1]
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

    def busy_ticks() -> int:
        total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and (
                        cpus is None or int(name[3:]) in cpus):
                    v = [int(x) for x in fields[:8]]
                    # user, nice, system, irq, softirq, steal (a busy host): not idle/iowait
                    total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return total

    try:
        ticks, own, start = busy_ticks(), time.process_time(), time.perf_counter()
        time.sleep(window)
        ticks, own, seconds = (busy_ticks() - ticks, time.process_time() - own,
                               time.perf_counter() - start)
        value: float | None = max(0.0, (ticks / os.sysconf("SC_CLK_TCK") - own) / seconds)
    except (OSError, ValueError, IndexError, AttributeError):
        value = None
    _BUSY_MEMO[:] = [(time.perf_counter(), value)]
    return value


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

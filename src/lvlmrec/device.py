"""Pick the torch device a stage runs on, and size the CPU thread pool.

A config says `device: auto` by default so one YAML file runs on a laptop, a Mac and a
GPU server alike; an explicit device that this machine lacks is an error up front rather
than a crash deep inside a model.
"""

from __future__ import annotations

import os

import torch

from lvlmrec.errors import ConfigError


def resolve_device(name: str = "auto") -> str:
    """Return a usable torch device string: "auto" picks cuda, then mps, then cpu."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available here "
                "(no GPU, or torch is a CPU build); use device: auto or cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} requested but only {count} CUDA device(s) exist")
        return name
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {name!r} requested but Apple MPS is not available here")
        return name
    raise ConfigError(f"device {name!r} is not supported: use 'auto', 'cpu', 'cuda' or 'mps'")


def available_cpus() -> int:
    """The CPUs this process may use: a container or `taskset` may grant fewer than the
    machine has (which is what `os.cpu_count` and torch count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_cpu_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to n, default the CPUs this process may use; more
    threads than granted cores makes matrix products slower, not faster."""
    n = max(1, int(n or available_cpus()))
    torch.set_num_threads(n)
    return n


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())

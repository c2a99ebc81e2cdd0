"""Test-wide guards: no network beyond loopback, no model hub, quiet and deterministic."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkBlocked(RuntimeError):
    pass


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Every test runs with outbound networking cut; only 127.0.0.1 answers."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny random LLaVA-NeXT checkpoint folder (describe/tiny.py), built once per session."""
    from lvlmrec.describe.tiny import build_tiny_llava_next

    return build_tiny_llava_next(tmp_path_factory.mktemp("tiny-llava-next"))


@pytest.fixture
def one_torch_thread(monkeypatch):
    """Tiny models run fastest on one thread; on a busy machine more only wait on each other.
    Trainers default to every granted core, so the process is granted one here."""
    import torch

    import lvlmrec.device

    monkeypatch.setattr(lvlmrec.device, "available_cpus", lambda: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def store_rows(db) -> list[tuple]:
    """(item_id, text, error, created) rows of a description store, read by a test while
    another process may be writing it; empty before the table exists."""
    import sqlite3
    from pathlib import Path

    if not Path(db).is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT item_id, text, error, created FROM descriptions "
                                "ORDER BY item_id").fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []



def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run `lvlmrec ARGS` as the shell would (through `main`, which turns errors into exit
    status 2): the exit status and the printed output."""
    import sys

    from lvlmrec.cli import main

    argv, sys.argv = sys.argv, ["lvlmrec", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
    return code, captured.out  # stderr has progress bars only

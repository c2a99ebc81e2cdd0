"""Scale a stage's model work out on a Ray cluster, with Ray Data (docs/ray.md).

Both stages that run models (describe, encode) share one shape:
1. the driver decides what is pending and cuts it into the batches the local engine
   would form;
2. a Ray dataset holds one block per batch; CPU tasks run each block through a
   `prepare` function (load and check images: a bad image becomes an error row);
3. a fixed pool of actors, each holding the model (built once, on its share of a GPU),
   turns blocks into results;
4. results stream back to the driver, the only process that writes the run's artifacts.

Fault tolerance is Ray Data's: an actor lost with its process or node is restarted and
its batch retried (`max_restarts=-1`, `max_task_retries=-1` by default), and so is a lost
CPU task. A retried batch is computed twice but reaches the driver once, and the writes
are keyed by item (the description store's primary key, INSERT OR REPLACE; embedding rows
by item id), so even a replayed batch leaves no duplicate.

Ray is the optional extra `lvlmrec[ray]`, imported only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lvlmrec.config import ScaleConfig
from lvlmrec.errors import MissingDependencyError, StageError

#: the lvlmrec package the driver runs: shipped to the workers with the job
PACKAGE_DIR = Path(__file__).resolve().parent


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the `data` part of the extra
    except ImportError:
        raise MissingDependencyError("ray", "ray", "--engine ray") from None
    return ray


@contextlib.contextmanager
def ray_session(scale: ScaleConfig) -> Iterator[Any]:
    """Ray for one stage run: the cluster at `scale.address`, else a new local instance.

    Workers import the driver's own lvlmrec (shipped with the job as a py_module), so every
    node runs the same code; nodes need lvlmrec's dependencies installed. A Ray this
    process already runs (a notebook, the tests) is used as it is and left running.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        check_reachable(scale.address)
        kwargs: dict[str, Any] = {"runtime_env": worker_runtime_env(),
                                  "logging_level": logging.WARNING}
        if scale.address is None and "RAY_ADDRESS" not in os.environ:
            kwargs["include_dashboard"] = False  # only for an instance we start
        try:
            ray.init(address=scale.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {scale.address}" if scale.address else "a local Ray"
            raise StageError(f"cannot start or reach {where}: {err} (start a cluster with "
                             "`ray start --head`; see docs/ray.md)") from None
    context = ray.data.DataContext.get_current()
    before = (context.enable_progress_bars, context.target_max_block_size)
    try:
        check_resources(ray.cluster_resources(), scale)
        context.enable_progress_bars = False  # the driver shows its own, per item
        # a block is one batch by construction: never split it (the backend would get the
        # batch in parts)
        context.target_max_block_size = None
        for name, level in (("ray.data", logging.WARNING),  # no per-dataset INFO lines
                            ("ray.data._internal.progress", logging.ERROR)):  # "bars off"
            logging.getLogger(name).setLevel(level)
        yield ray
    finally:
        context.enable_progress_bars, context.target_max_block_size = before
        if started:
            ray.shutdown()


def worker_runtime_env() -> dict[str, Any]:
    """The job's runtime environment: the driver's lvlmrec, and no progress bars in the
    workers (the driver shows one for the whole run)."""
    return {"py_modules": [str(PACKAGE_DIR)], "env_vars": {"TQDM_DISABLE": "1"}}


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT where nothing listens: Ray itself retries for minutes."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StageError(f"Ray address {address!r}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise StageError(f"nothing answers at the Ray address {address} ({err}): is the head "
                         "node started (`ray start --head`, docs/ray.md)?") from None


def check_resources(total: dict[str, float], scale: ScaleConfig) -> None:
    """Fail up front when the cluster cannot hold the actor pool (it would wait forever)."""
    need = {"GPU": scale.workers * scale.gpus_per_worker,
            "CPU": scale.workers * scale.cpus_per_worker + (1 if scale.gpus_per_worker else 0)}
    for name, amount in need.items():
        have = total.get(name, 0.0)
        if amount > have:
            raise StageError(
                f"{scale.workers} Ray workers x {scale.gpus_per_worker:g} GPU and "
                f"{scale.cpus_per_worker:g} CPU (plus a CPU for image loading when workers "
                f"use GPUs) need {amount:g} {name}s, but the cluster has {have:g}: lower "
                "--workers or --gpus-per-worker, or add nodes")


def _load_cpus(scale: ScaleConfig) -> float:
    """CPUs of a `prepare` task. Without GPUs, the same as an actor's: Ray then fuses
    loading into the actors, which would otherwise hold every CPU the tasks need."""
    return 1.0 if scale.gpus_per_worker else scale.cpus_per_worker


def batch_dataset(columns: dict[str, Sequence[Any]], bounds: Sequence[int],
                  prepare: Callable[..., dict[str, np.ndarray]], scale: ScaleConfig,
                  **prepare_kwargs: Any) -> Any:
    """A dataset with one block per batch: rows bounds[i]:bounds[i+1] of `columns`,
    through `prepare(rows, **prepare_kwargs)` in CPU tasks; each row gets its `batch`.

    The table travels once through the object store; blocks are cut by the tasks, so a
    catalog of millions of items costs the driver no per-block work.
    """
    import pyarrow as pa

    ray = import_ray()
    n_batches = len(bounds) - 1
    return ray.data.range(n_batches, override_num_blocks=n_batches).map_batches(
        _prepare_batches, batch_size=None, batch_format="numpy", num_cpus=_load_cpus(scale),
        fn_kwargs={"table": pa.table(dict(columns)), "bounds": np.asarray(bounds),
                   "prepare": prepare, "prepare_kwargs": prepare_kwargs})


def _prepare_batches(block: dict[str, np.ndarray], table: Any, bounds: np.ndarray,
                     prepare: Callable[..., dict[str, np.ndarray]],
                     prepare_kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    parts = []
    for b in block["id"].tolist():
        rows = table.slice(bounds[b], bounds[b + 1] - bounds[b]).to_pydict()
        out = prepare(rows, **prepare_kwargs)
        out["batch"] = np.full(bounds[b + 1] - bounds[b], b, dtype=np.int64)
        parts.append(out)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def on_workers(dataset: Any, worker: type, scale: ScaleConfig, n_blocks: int,
               **worker_kwargs: Any) -> Any:
    """Each block through `worker(**worker_kwargs)`: a fixed pool of `scale.workers` actors
    (no more than blocks), each built once (the model loads there) on
    `scale.gpus_per_worker` GPUs."""
    ray = import_ray()
    return dataset.map_batches(
        worker, batch_size=None, batch_format="numpy", fn_constructor_kwargs=worker_kwargs,
        compute=ray.data.ActorPoolStrategy(size=min(scale.workers, n_blocks)),
        num_cpus=scale.cpus_per_worker, num_gpus=scale.gpus_per_worker)


def stream(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The results, block by block as the workers finish them (in no fixed order).

    A worker that raises (a model that cannot load) stops the run with its message;
    what the driver wrote before stays written.
    """
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as err:  # noqa: BLE001 - Ray wraps worker errors in many types
        raise StageError(f"a Ray worker failed: {worker_error(err)}") from None


def worker_error(err: BaseException) -> str:
    """The worker's own error, not Ray's wrapping: a task error's cause, else the end of
    the remote traceback that Ray writes into its message (an actor that failed to start)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = str(err).splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line[:1].isspace()), default=-1)
    return "\n".join(lines[last_frame + 1:]).strip() or f"{type(err).__name__}: {err}"


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array, also of equal-shaped arrays (which np.array would stack)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out

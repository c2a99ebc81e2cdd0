"""The run directory: where each artifact lives, atomic writes, and stage records.

A stage is skipped when its record says it ran with the same key (a hash of its settings
and of its inputs' content) and its outputs are still there unchanged. Outputs are written
to a temporary name and renamed, so a crash never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

STAGES_DIR = ".lvlmrec/stages"


class Workdir:
    """Artifact paths of one run (DESIGN §1)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workdir({str(self.root)!r})"

    # folders
    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def descriptions_dir(self) -> Path:
        return self.root / "descriptions"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def figures_dir(self) -> Path:
        return self.report_dir / "figures"

    @property
    def stages_dir(self) -> Path:
        return self.root / STAGES_DIR

    # files
    @property
    def items_path(self) -> Path:
        return self.dataset_dir / "items.parquet"

    @property
    def interactions_path(self) -> Path:
        return self.dataset_dir / "interactions.parquet"

    @property
    def users_path(self) -> Path:
        return self.dataset_dir / "users.parquet"

    @property
    def dataset_json(self) -> Path:
        return self.dataset_dir / "dataset.json"

    @property
    def features_dir(self) -> Path:
        """Embeddings that came with the dataset (e.g. the Kaggle archive's feature arrays)."""
        return self.dataset_dir / "features"

    @property
    def descriptions_db(self) -> Path:
        return self.descriptions_dir / "descriptions.sqlite"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.results_dir / "metrics.csv"

    @property
    def run_json(self) -> Path:
        return self.results_dir / "run.json"

    def embedding_path(self, name: str) -> Path:
        return self.embeddings_dir / f"{name}.npy"

    def model_dir(self, name: str) -> Path:
        """models/<name>; a name that would leave models/ (a path, '.', '..') is refused."""
        from lvlmrec.errors import ConfigError

        if not name or name.startswith(".") or "/" in name or os.sep in name:
            raise ConfigError(f"strategy name {name!r} cannot name a folder in models/")
        return self.models_dir / name

    def resolve(self, path: str | os.PathLike) -> Path:
        """Paths stored in artifacts are relative to the workdir when they live inside it."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def relative(self, path: str | os.PathLike) -> str:
        p = Path(path).resolve()
        try:
            return str(p.relative_to(self.root.resolve()))
        except ValueError:
            return str(p)


# --------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: artifacts get the modes a plain `open`/`mkdir` would give (0644 / 0755 under umask 022),
#: not mkstemp's private 0600
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK
#: temporary names carry the writer's pid, so a later run can tell a dead writer's leftovers
_TMP_TAG = "lvtmp"


def _tmp_prefix(name: str) -> str:
    return f".{name}.{_TMP_TAG}{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it replaces `path` whole,
    so a reader (or a killed writer) never sees a half-written folder under that name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name), suffix=".tmp",
                                        dir=path.parent))
            os.replace(path, old / "old")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_stray_temps(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove temporary files and folders left in `folder` by writers that are no longer
    running (a killed stage); a live writer's temporaries (its pid runs) are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".*.{_TMP_TAG}*.tmp"
    removed = []
    for path in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
        tag = path.name.split(f".{_TMP_TAG}", 1)[1].split(".", 1)[0]
        if not tag.isdigit() or _pid_alive(int(tag)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def clean_run_temps(workdir: Workdir) -> list[Path]:
    """`clean_stray_temps` in every artifact folder of a run (not below: a workdir may hold
    other things, and image folders are large)."""
    folders = [workdir.root, workdir.dataset_dir, workdir.features_dir,
               workdir.descriptions_dir, workdir.embeddings_dir, workdir.models_dir,
               workdir.results_dir, workdir.report_dir, workdir.figures_dir,
               workdir.stages_dir]
    return [p for folder in folders for p in clean_stray_temps(folder, recursive=False)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def write_parquet(path: str | os.PathLike, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# --------------------------------------------------------------------------- hashing
def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        items = [to_jsonable(v) for v in obj]
        return sorted(items, key=repr) if isinstance(obj, set) else items
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def hash_obj(obj: Any) -> str:
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


#: the memo of content hashes, inside the workdir
HASH_MEMO = ".lvlmrec/hashes.json"
#: a file modified this recently is hashed again next time: its mtime may not yet tell a
#: later write in the same clock tick apart (git's "racy clean" problem)
_RACY_SECONDS = 2.0


def _is_temp(name: str) -> bool:
    """Temporary files of `atomic_path`: never part of an artifact's content."""
    return name.startswith(".") and name.endswith(".tmp")


class ContentHasher:
    """Content hashes of files and folders, memoised by (size, mtime_ns, ctime_ns, inode).

    Keys and digests depend on bytes only; the memo just saves re-reading a file whose
    stat is unchanged. Any mismatch (a copy, an in-place edit, a restored mtime) falls
    back to hashing the content, so the memo can make a check slower, never wrong. Paths
    inside the workdir are memoised relative to it, so a moved workdir keeps its memo.
    """

    def __init__(self, workdir: Workdir | None = None):
        self.root = workdir.root.resolve() if workdir is not None else None
        self._memo: dict[str, list[Any]] = {}
        self._dirty = False
        if self.root is not None:
            try:
                memo = json.loads((self.root / HASH_MEMO).read_text())
                if isinstance(memo, dict):
                    self._memo = memo
            except (OSError, ValueError):
                pass

    def _name(self, path: str) -> str:
        p = os.path.abspath(path)
        if self.root is not None:
            root = str(self.root) + os.sep
            if p.startswith(root):
                return p[len(root):]
        return p

    def file(self, path: str | os.PathLike, st: os.stat_result | None = None) -> str:
        """sha256 of a file's bytes (`st`: its stat, when the caller has it)."""
        path = os.fspath(path)
        st = st or os.stat(path)
        name = self._name(path)
        hit = self._memo.get(name)
        if (hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns
                and hit[2] == st.st_ctime_ns and hit[3] == st.st_ino):
            return hit[4]
        digest = file_digest(path)
        if time.time() - st.st_ctime_ns / 1e9 > _RACY_SECONDS:
            self._memo[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]
            self._dirty = True
        elif name in self._memo:
            del self._memo[name]
            self._dirty = True
        return digest

    def tree(self, path: str | os.PathLike) -> str:
        """Hash of a folder: every file's relative name and content hash."""
        h = hashlib.sha256(b"dir\0")
        self._tree(os.fspath(path), "", h)
        return h.hexdigest()

    def _tree(self, folder: str, prefix: str, h: Any) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                self._tree(entry.path, f"{prefix}{entry.name}/", h)
            elif not _is_temp(entry.name) and entry.is_file():
                digest = self.file(entry.path, entry.stat())
                h.update(f"{prefix}{entry.name}\0{digest}\n".encode())

    def digest(self, path: str | os.PathLike) -> str:
        """Content hash of a file or a folder."""
        path = Path(path)
        return self.tree(path) if path.is_dir() else self.file(path)

    def save(self) -> None:
        """Write the memo back (atomically; a concurrent writer at worst costs a rehash)."""
        if self._dirty and self.root is not None and self.root.is_dir():
            try:
                write_text(self.root / HASH_MEMO, json.dumps(self._memo, separators=(",", ":")))
            except OSError:
                pass  # a read-only workdir: the memo is only a cache
            self._dirty = False


def code_key(plugins: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The code a result depends on: the lvlmrec version and the source of every plugin
    module (a package: all its .py files), found without importing it. Part of the keys of
    what plugins affect, so upgrading lvlmrec or editing a plugin refits."""
    import importlib.util

    from lvlmrec import __version__

    sources: dict[str, str] = {}
    for name in plugins:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not os.path.isfile(spec.origin):
            sources[name] = "unavailable"
            continue
        origin = Path(spec.origin)
        files = (sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py"
                 else [origin])
        sources[name] = hash_obj({str(f.relative_to(origin.parent)): file_digest(f)
                                  for f in files})
    return {"lvlmrec": __version__, "plugins": sources}


def _content_digest(path: Path, hasher: ContentHasher | None = None) -> str:
    return (hasher or ContentHasher()).digest(path)


# --------------------------------------------------------------------------- stage records
@dataclasses.dataclass
class StageRecord:
    name: str
    key: str
    digest: str
    outputs: dict[str, dict[str, Any]]
    seconds: float
    finished_at: float
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: what the key was made of (settings hash, upstream digests, version): says why a
    #: stage would run again
    parts: dict[str, Any] = dataclasses.field(default_factory=dict)


class StageBook:
    """Reads and writes the records under `<workdir>/.lvlmrec/stages/`.

    An output is recorded by its content hash (files) or the hash of every file's name and
    content (folders), never by times or sizes: a copied or moved workdir is still current,
    and an output changed in place is not.
    """

    def __init__(self, workdir: Workdir, hasher: ContentHasher | None = None):
        self.workdir = workdir
        self.hasher = hasher or ContentHasher(workdir)

    def _path(self, name: str) -> Path:
        return self.workdir.stages_dir / f"{name}.json"

    def get(self, name: str) -> StageRecord | None:
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            rec = StageRecord(**read_json(path))
        except (ValueError, TypeError):
            return None
        if any("digest" not in v for v in rec.outputs.values()):
            return None  # a record from before content hashing
        return rec

    def why_stale(self, name: str, key: str) -> str | None:
        """None when the stage is current for `key`; otherwise the reason it is not."""
        rec = self.get(name)
        if rec is None:
            return "never ran"
        if rec.key.startswith("incomplete:"):
            return "last run incomplete"
        if rec.key != key:
            return "settings, inputs or code changed"
        for rel, out in rec.outputs.items():
            path = self.workdir.resolve(rel)
            if not path.exists():
                return f"output {rel} missing"
            if self.hasher.digest(path) != out["digest"]:
                return f"output {rel} changed"
        return None

    def is_current(self, name: str, key: str) -> bool:
        return self.why_stale(name, key) is None

    def finish(
        self,
        name: str,
        key: str,
        outputs: list[Path],
        seconds: float,
        info: dict[str, Any] | None = None,
        digest: str | None = None,
        parts: dict[str, Any] | None = None,
    ) -> StageRecord:
        """Record a finished stage. `digest` (what downstream keys hash) defaults to a hash
        of the outputs' content."""
        recorded: dict[str, dict[str, Any]] = {}
        for path in sorted(set(outputs)):
            path = Path(path)
            recorded[self.workdir.relative(path)] = {"digest": self.hasher.digest(path)}
        if digest is None:
            digest = hash_obj({rel: v["digest"] for rel, v in recorded.items()})
        rec = StageRecord(
            name=name,
            key=key,
            digest=digest,
            outputs=recorded,
            seconds=round(seconds, 3),
            finished_at=time.time(),
            info=info or {},
            parts=parts or {},
        )
        write_json(self._path(name), rec)
        self.hasher.save()
        return rec

    def invalidate(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def digest(self, name: str) -> str | None:
        rec = self.get(name)
        return rec.digest if rec else None


# --------------------------------------------------------------------------- the stage lock
LOCK_FILE = ".lvlmrec/lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def stage_lock(workdir: Workdir, what: str) -> Iterator[None]:
    """Hold `.lvlmrec/lock` while stages run, so a second process on the same workdir is
    refused instead of redoing the same work (two `describe`s would describe every item
    twice). A lock left by a process that is gone (same host, pid not alive) is taken over.
    """
    import socket

    from lvlmrec.errors import LvlmrecError

    path = workdir.root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
          "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            pid = holder.get("pid")
            same_host = holder.get("host") == me["host"]
            if isinstance(pid, int) and same_host and not _pid_alive(pid):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if not holder and time.time() - _mtime(path) > 10:
                path.unlink(missing_ok=True)  # empty and old: a crash between open and write
                continue
            raise LvlmrecError(
                f"workdir {workdir.root} is busy: {holder.get('command', 'another command')} "
                f"is running there (pid {pid} on {holder.get('host', '?')}, since "
                f"{holder.get('started', '?')}); wait for it to finish, or delete {path} "
                "if that process is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise LvlmrecError(f"cannot take the lock {path}: it keeps reappearing")
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()

"""Plugins: the Python modules a config's `represent.plugins` names to register extra kinds.

An entry is a module name or a path to a `.py` file (or a package folder). When the config
is loaded, a name is looked up in the config file's folder, then the working directory,
and found files are written back as absolute paths; anything else must be an installed
module. So the workdir's saved config.yaml imports the same file from wherever a later
stage (or the server, or a notebook) runs, without PYTHONPATH. Importing a plugin that
fails, in any stage, is one `ConfigError` naming the entry and the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from lvlmrec.errors import ConfigError


def _file_of(entry: str, base: Path) -> Path | None:
    """The file or package folder `entry` names under `base`, if there is one."""
    path = Path(entry)
    if path.suffix == ".py" or "/" in entry or "\\" in entry:
        target = path if path.is_absolute() else base / path
        return target.resolve() if target.exists() else None
    for candidate in (base / f"{entry}.py", base / entry / "__init__.py"):
        if candidate.is_file():
            return (candidate if candidate.name != "__init__.py" else candidate.parent).resolve()
    return None


def resolve_plugins(entries: list[str], base: Path) -> list[str]:
    """Entries with files in the config's folder or the working directory made absolute."""
    out = []
    for entry in entries:
        found = _file_of(entry, base) or _file_of(entry, Path.cwd())
        out.append(str(found) if found is not None else entry)
    return out


def _is_path(entry: str) -> bool:
    path = Path(entry)
    return path.is_absolute() or path.suffix == ".py" or "/" in entry or "\\" in entry


def module_name(entry: str) -> str:
    """The name a plugin entry is imported as (a file's stem, a package folder's name)."""
    if not _is_path(entry):
        return entry
    path = Path(entry)
    if path.name == "__init__.py":
        return path.parent.name
    return path.stem if path.suffix == ".py" else path.name


def import_plugin(entry: str) -> None:
    """Import one plugin entry (a module name or a file path) once."""
    path = Path(entry)
    try:
        if not _is_path(entry):
            importlib.import_module(entry)
            return
        if path.is_dir():
            path = path / "__init__.py"
        name = module_name(str(path))
        loaded = sys.modules.get(name)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == \
                path.resolve():
            return
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # registered under its plain name, so saved models name their class `name.Class`
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    except Exception as err:  # noqa: BLE001 - any failure in user code is one clean error
        raise ConfigError(
            f"represent.plugins: cannot import {entry!r}: {type(err).__name__}: {err} (a plugin "
            "is a module name or a .py file, found in the config file's folder, the working "
            "directory or the installed packages)") from None


def import_plugins(entries: list[str]) -> None:
    for entry in entries:
        import_plugin(entry)

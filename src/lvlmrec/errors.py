"""Errors a user can act on. The CLI prints their message without a traceback."""


class LvlmrecError(Exception):
    """Base class: the message says what went wrong and where."""


class ConfigError(LvlmrecError):
    """A configuration file or option is invalid."""


class DataError(LvlmrecError):
    """Input data is missing, malformed or inconsistent."""


class StageError(LvlmrecError):
    """A pipeline stage cannot run (for example, its inputs are missing)."""


class MissingDependencyError(LvlmrecError):
    """An optional extra is needed for the requested feature."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the optional package {package!r}: "
            f"pip install 'lvlmrec[{extra}]'"
        )
        self.package = package
        self.extra = extra

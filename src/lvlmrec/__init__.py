"""lvlmrec: multimodal recommendation with large vision-language models."""

__version__ = "0.1.0"

__all__ = ["Experiment", "Run", "load_run", "__version__"]


def __getattr__(name: str):
    """The Python API (lvlmrec/api.py), imported on first use so `import lvlmrec` and the
    CLI stay light."""
    if name in ("Experiment", "Run", "load_run"):
        from lvlmrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'lvlmrec' has no attribute {name!r}")

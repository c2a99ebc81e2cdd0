"""Serve a finished run: an HTTP API and a web page (`lvlmrec serve`, docs/serve.md)."""

from lvlmrec.serve.app import create_app
from lvlmrec.serve.service import load_run

__all__ = ["create_app", "load_run"]

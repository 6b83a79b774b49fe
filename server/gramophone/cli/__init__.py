"""The ``gramophone`` command line: offline subcommands, ``serve`` and plots."""

from .main import main

__all__ = ["main"]

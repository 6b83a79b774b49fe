"""The ``gramophone`` command line: offline subcommands, ``serve`` and plots."""

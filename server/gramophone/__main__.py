"""``python -m gramophone``: the same as the ``gramophone`` command."""

import sys

from .cli.main import main

sys.exit(main())

"""``python -m gramophone``: the same as the ``gramophone`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m omnireg``: the same as the ``omnireg`` command."""

import sys

from .cli.main import main

sys.exit(main())

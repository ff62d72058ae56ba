"""``python -m pure_transformer`` is the ``pure-transformer`` command."""

import sys

from .cli import main

sys.exit(main())

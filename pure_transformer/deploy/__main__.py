"""``python -m pure_transformer.deploy``: the command behind ``k8s/deploy.sh``."""

from __future__ import annotations

import sys

from ..commands.deploy import main

if __name__ == "__main__":
    sys.exit(main())

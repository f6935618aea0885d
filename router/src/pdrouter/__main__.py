"""`python -m pdrouter`: the same router as the `pdstack-router` command."""

import sys

from pdrouter.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Entry point of ``python -m anila_core``."""

import sys

from anila_core.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m codi2.eval …`` = ``codi2 eval …``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m data_builders SOURCE …``: the same as ``codi2 build-data SOURCE …``."""
import sys

from .cli import main

if __name__ == "__main__":  # a guard: worker processes (spawn) import this module again
    sys.exit(main())

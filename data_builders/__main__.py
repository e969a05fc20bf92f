"""``python -m data_builders SOURCE …``: the same as ``codi2 build-data SOURCE …``."""
import sys

from .cli import main

sys.exit(main())

"""``python -m codi2.eval …`` = ``codi2 eval …``."""
import sys

from .cli import main

sys.exit(main())

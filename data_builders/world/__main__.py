"""``python -m data_builders.world --out DIR --n N --seed S``: build a mini-world manifest."""
import sys

from .build import main

sys.exit(main())

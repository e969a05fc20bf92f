"""The mini world as a codi2 plugin (entry point ``world`` of the ``codi2.plugins`` group): importing it
registers the ``world`` evaluation suite. ``codi2 build-data world`` comes with the data builders' own
sources (``data_builders.cli.PLUGINS``)."""
from . import suite  # noqa: F401  (registers the suite)

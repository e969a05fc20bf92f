"""codi2: CoDi-2-style any-to-any multimodal chat."""
__version__ = "0.1.0"

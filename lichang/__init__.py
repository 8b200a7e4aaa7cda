"""lichang (立场): paragraph-level stance and topic scoring of Chinese brand coverage."""

__version__ = "0.1.0"

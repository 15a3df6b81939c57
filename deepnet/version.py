"""deepnet's version (a leaf module: the command line reads it without importing the package's front)."""

__version__ = "0.1.0"

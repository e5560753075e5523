"""The package version, in one place below every layer (the CLI prints it)."""

__version__ = "0.1.0"

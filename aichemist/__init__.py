"""AI-Chemist control stack: shared core (errors, parameters, clocks), the CLI and the launcher."""

__version__ = "0.1.0"

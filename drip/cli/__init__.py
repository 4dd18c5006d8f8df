"""The ``drip`` command: one module per group of sub-commands, :func:`main` in ``main``."""

from drip.cli.main import main

__all__ = ["main"]

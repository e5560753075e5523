"""The ``sourcery`` command: ``demo``, ``inspect``, ``sync``, ``replicate``, ``migrate``,
``worker`` and ``send``.

A thin layer: it parses arguments, sets up logging (the only place that does), calls the
library and prints what it returns with rich. Exit codes: 0 ok, 1 error, 2 usage.

:mod:`.entry` holds :func:`main` and the top-level parser; each command group has its own
module (:mod:`.demo`, :mod:`.inspect`, :mod:`.stores`, :mod:`.worker`) that adds its
subcommands' arguments and runs them; :mod:`.common` holds what they share.
"""

from __future__ import annotations

from sourcery._apps.cli.entry import main

__all__ = ["main"]

"""``sourcery.__all__`` is exactly the public API: every name in it exists, and nothing
public is exported by accident."""

from __future__ import annotations
import __future__

import types

import sourcery


def test_all_is_exactly_the_public_surface() -> None:
    public = {
        name
        for name, value in vars(sourcery).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert public | {"__version__"} == set(sourcery.__all__)
    assert len(set(sourcery.__all__)) == len(sourcery.__all__)


def test_errors_share_one_root() -> None:
    errors = [getattr(sourcery, n) for n in sourcery.__all__ if n.endswith(("Error", "Rejected"))]
    errors += [sourcery.UnknownActorType, sourcery.UnknownCommand, sourcery.InvalidActorRef]
    assert errors
    for error in errors:
        assert issubclass(error, sourcery.SourceryError), error

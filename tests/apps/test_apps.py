"""load_app: the actor types a ``module:attribute`` names."""

from __future__ import annotations

from typing import Any

import pytest

from sourcery._apps.loader import load_app
from sourcery._core.actor import ActorType
from sourcery._core.errors import ConfigurationError
from sourcery.examples.bank import accounts

HERE = __name__
"""This module as load_app imports it (``apps.test_apps`` since tests/ mirrors the package)."""

ONE = accounts
SEVERAL = (accounts,)
NOT_TYPES = [accounts, "account"]
EMPTY: list[ActorType[Any, Any, Any]] = []
NUMBER = 7


def make() -> list[ActorType[Any, Any, Any]]:
    return [accounts]


def make_one() -> ActorType[Any, Any, Any]:
    return accounts


class Holder:
    types = [accounts]


@pytest.mark.parametrize(
    "spec",
    [
        "sourcery.examples.bank:accounts",
        f"{HERE}:ONE",
        f"{HERE}:SEVERAL",
        f"{HERE}:make",
        f"{HERE}:make_one",
        f"{HERE}:Holder.types",
    ],
)
def test_an_actor_type_a_sequence_or_a_callable_returning_either(spec: str) -> None:
    assert load_app(spec) == [accounts]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sourcery.examples.bank", "MODULE:ATTRIBUTE"),
        (":accounts", "MODULE:ATTRIBUTE"),
        ("sourcery.examples.bank:", "MODULE:ATTRIBUTE"),
        ("no_such_module_here:x", "cannot import"),
        ("sourcery.examples.bank:nothing", "no attribute"),
        (f"{HERE}:NOT_TYPES", "must be an ActorType"),
        (f"{HERE}:EMPTY", "must be an ActorType"),
        (f"{HERE}:NUMBER", "got int"),
        (f"{HERE}:Holder", "must be an ActorType"),
    ],
)
def test_anything_else_is_a_configuration_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_app(spec)

"""The given-when-then kit: it passes what is right and fails loudly on what is not."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sourcery import ActorType, EncodingError, PayloadTooLarge, Rejected
from sourcery.examples.bank import (
    Account,
    Deposit,
    Deposited,
    InsufficientFunds,
    InvalidAmount,
    Open,
    Opened,
    Withdraw,
    Withdrew,
    accounts,
)
from sourcery.testing import Scenario


def test_then_passes_and_returns_the_state() -> None:
    state = Scenario(accounts).given(Deposited(100)).when(Withdraw(30)).then(Withdrew(30))
    assert state == Account(balance=70)
    assert Scenario(accounts).when(Open("a")).then(Opened("a")) == Account(owner="a")


def test_then_with_no_events() -> None:
    scenario = Scenario(accounts).given(Opened("a")).when(Open("a"))
    assert scenario.then() == Account(owner="a")
    with pytest.raises(AssertionError, match=r"expected events \[Opened"):
        scenario.then(Opened("a"))


def test_given_accumulates_and_state_folds() -> None:
    scenario = Scenario(accounts).given(Deposited(5)).given(Deposited(7), Withdrew(2))
    assert scenario.state() == Account(balance=10)
    assert Scenario(accounts).state() == Account()


def test_then_fails_on_other_events_with_both_lists_in_the_message() -> None:
    scenario = Scenario(accounts).given(Deposited(100)).when(Withdraw(30))
    with pytest.raises(AssertionError) as info:
        scenario.then(Withdrew(31))
    message = str(info.value)
    assert "Withdrew(amount=31)" in message
    assert "Withdrew(amount=30)" in message
    with pytest.raises(AssertionError):
        scenario.then()
    with pytest.raises(AssertionError):
        scenario.then(Withdrew(30), Withdrew(30))


def test_then_propagates_a_rejection() -> None:
    with pytest.raises(InsufficientFunds):
        Scenario(accounts).when(Withdraw(1)).then(Withdrew(1))


def test_then_without_when_fails() -> None:
    with pytest.raises(AssertionError, match="when"):
        Scenario(accounts).given(Deposited(1)).then()
    with pytest.raises(AssertionError, match="when"):
        Scenario(accounts).then_rejects(InsufficientFunds)


def test_then_rejects_returns_the_rejection() -> None:
    exc = Scenario(accounts).given(Deposited(5)).when(Withdraw(6)).then_rejects(InsufficientFunds)
    assert isinstance(exc, InsufficientFunds)
    assert "5" in str(exc)
    # A base class matches too.
    assert isinstance(Scenario(accounts).when(Withdraw(1)).then_rejects(Rejected), Rejected)


def test_then_rejects_with_match() -> None:
    scenario = Scenario(accounts).given(Deposited(5)).when(Withdraw(6))
    assert isinstance(scenario.then_rejects(InsufficientFunds, match=r"balance 5"), Rejected)
    with pytest.raises(AssertionError, match="does not match"):
        scenario.then_rejects(InsufficientFunds, match=r"balance 6")


def test_then_rejects_with_the_wrong_type() -> None:
    scenario = Scenario(accounts).when(Withdraw(-1))
    with pytest.raises(
        AssertionError, match="expected InsufficientFunds, got InvalidAmount"
    ) as info:
        scenario.then_rejects(InsufficientFunds)
    assert isinstance(info.value.__cause__, InvalidAmount)
    assert isinstance(scenario.then_rejects(InvalidAmount), InvalidAmount)


def test_then_rejects_without_a_rejection() -> None:
    with pytest.raises(AssertionError, match=r"expected InsufficientFunds, got events \[Deposited"):
        Scenario(accounts).when(Deposit(1)).then_rejects(InsufficientFunds)


def test_then_rejects_lets_other_errors_through() -> None:
    with pytest.raises(ZeroDivisionError):
        Scenario(broken).when(Poke()).then_rejects(Rejected)


def untyped() -> Scenario[Any, Any, Any]:
    """The bank's scenario without its static types, to pass it what it does not declare."""
    return Scenario(accounts)


def test_undeclared_command_fails() -> None:
    with pytest.raises(AssertionError, match="Poke is not a command of 'account'"):
        untyped().when(Poke()).then()
    with pytest.raises(AssertionError, match="not a command"):
        untyped().when(Poke()).then_rejects(Rejected)


def test_undeclared_event_fails() -> None:
    with pytest.raises(AssertionError, match="Poked is not an event type of 'account'"):
        untyped().given(Poked(None)).state()
    with pytest.raises(AssertionError, match="not an event type"):
        Scenario(broken).when(Undeclared()).then(Poked(None))


# -- an actor type whose events do not all survive storage ------------------------------------


class Bag(msgspec.Struct, frozen=True):
    items: Any = None


class Poke(msgspec.Struct, frozen=True):
    pass


class Undeclared(msgspec.Struct, frozen=True):
    pass


class Put(msgspec.Struct, frozen=True):
    value: Any


class Poked(msgspec.Struct, frozen=True):
    value: Any


class Holding(msgspec.Struct, frozen=True):
    value: Any


def broken_decide(state: Bag, command: Any) -> list[Any]:
    match command:
        case Put(value):
            return [Holding(value)]
        case Undeclared():
            return [Poked(None)]
        case Poke():
            return [Poked(1 // 0)]
    raise AssertionError(command)  # pragma: no cover


def broken_evolve(state: Bag, event: Any) -> Bag:
    match event:
        case Holding(value):
            return Bag(value)
    return state


broken: ActorType[Bag, Any, Any] = ActorType(
    name="broken",
    initial=Bag(),
    decide=broken_decide,
    evolve=broken_evolve,
    commands=[Put, Poke, Undeclared],
    events=[Holding],
)


class Opaque:
    """Nothing msgspec can encode."""


def test_round_trip_passes_for_encodable_events() -> None:
    assert Scenario(broken).when(Put([1, "a"])).then(Holding([1, "a"])) == Bag([1, "a"])


def test_non_encodable_event_fails() -> None:
    value = Opaque()
    with pytest.raises(EncodingError, match="cannot encode"):
        Scenario(broken).when(Put(value)).then(Holding(value))
    with pytest.raises(EncodingError, match="cannot encode"):
        Scenario(broken).given(Holding(value)).state()


def test_event_that_changes_in_a_round_trip_fails() -> None:
    # A tuple comes back as a list: the store would not give back what decide produced.
    with pytest.raises(AssertionError, match="does not survive encoding"):
        Scenario(broken).when(Put((1, 2))).then(Holding((1, 2)))


def test_event_over_the_size_limit_fails() -> None:
    scenario = Scenario(broken, max_payload=50).when(Put("x" * 100))
    with pytest.raises(PayloadTooLarge, match="limit is 50"):
        scenario.then(Holding("x" * 100))


def test_state_that_cannot_be_stored_fails() -> None:
    # The event is fine on its own, but the state it leads to is over the limit.
    big: ActorType[Bag, Any, Any] = ActorType(
        name="big",
        initial=Bag(),
        decide=broken_decide,
        evolve=lambda state, event: Bag(["y" * 40] * 3),
        commands=[Put],
        events=[Holding],
    )
    with pytest.raises(PayloadTooLarge, match="state Bag"):
        Scenario(big, max_payload=60).when(Put(1)).then(Holding(1))

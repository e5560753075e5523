"""A bank account: the README's example, and the demo's workload."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sourcery._core.actor import ActorType, Branch
from sourcery._core.errors import Rejected


class Open(msgspec.Struct, frozen=True):
    owner: str


class Deposit(msgspec.Struct, frozen=True):
    amount: int


class Withdraw(msgspec.Struct, frozen=True):
    amount: int


class Opened(msgspec.Struct, frozen=True):
    owner: str


class Deposited(msgspec.Struct, frozen=True):
    amount: int


class Withdrew(msgspec.Struct, frozen=True):
    amount: int


class Overdrawn(msgspec.Struct, frozen=True):
    """Recorded when a merge of divergent branches took the balance below zero."""

    balance: int


class Account(msgspec.Struct, frozen=True):
    owner: str = ""
    balance: int = 0
    overdrafts: int = 0


class InsufficientFunds(Rejected):
    """A withdrawal larger than the balance."""


class InvalidAmount(Rejected):
    """Amounts are positive."""


Command = Open | Deposit | Withdraw
BankEvent = Opened | Deposited | Withdrew | Overdrawn


def decide(state: Account, command: Command) -> list[BankEvent]:
    match command:
        case Open(owner):
            return [] if state.owner == owner else [Opened(owner)]
        case Deposit(amount) | Withdraw(amount) if amount <= 0:
            raise InvalidAmount(f"amount must be positive, got {amount}")
        case Deposit(amount):
            return [Deposited(amount)]
        case Withdraw(amount) if amount > state.balance:
            raise InsufficientFunds(f"balance {state.balance} is less than {amount}")
        case Withdraw(amount):
            return [Withdrew(amount)]
    raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover


def evolve(state: Account, event: BankEvent) -> Account:
    match event:
        case Opened(owner):
            return msgspec.structs.replace(state, owner=owner)
        case Deposited(amount):
            return msgspec.structs.replace(state, balance=state.balance + amount)
        case Withdrew(amount):
            return msgspec.structs.replace(state, balance=state.balance - amount)
        case Overdrawn():
            return msgspec.structs.replace(state, overdrafts=state.overdrafts + 1)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


def on_merge(state: Account, branches: Sequence[Branch[Account, BankEvent]]) -> list[BankEvent]:
    """A merge that leaves the account below zero records it, once per merge."""
    return [Overdrawn(state.balance)] if state.balance < 0 else []


accounts: ActorType[Account, Command, BankEvent] = ActorType(
    name="account",
    initial=Account(),
    decide=decide,
    evolve=evolve,
    commands=[Open, Deposit, Withdraw],
    events=[Opened, Deposited, Withdrew, Overdrawn],
    on_merge=on_merge,
)

"""Money transfers between wallets: a saga run by a process manager.

A transfer is an actor of its own. Once ``Requested``, the saga debits the source wallet,
credits the target, and refunds the source when the target refuses the credit (it is
frozen). Wallets record a refusal as an event (``DebitRefused``, ``CreditRefused``) rather
than raising, so a replay of the saga after a crash finds the same answer in the store.
Every transfer ends ``completed``, ``refunded`` or ``failed``, once, and money is conserved::

    async with Runtime.open(url, [wallets, transfers]) as runtime:
        async with react(runtime, saga, target=url) as running:
            await runtime.send(transfers("t1"), Request("alice", "bob", 30))
            await running.caught_up()
"""

from __future__ import annotations

from typing import Any

import msgspec

from sourcery._core.actor import ActorType, Event
from sourcery._core.records import ActorRef
from sourcery._readside.reactions import ProcessManager

# -- wallets ---------------------------------------------------------------------------


class Fund(msgspec.Struct, frozen=True):
    amount: int


class Freeze(msgspec.Struct, frozen=True):
    pass


class Debit(msgspec.Struct, frozen=True):
    transfer: str
    amount: int
    to: str


class Credit(msgspec.Struct, frozen=True):
    transfer: str
    amount: int
    source: str


class Refund(msgspec.Struct, frozen=True):
    transfer: str
    amount: int


class Funded(msgspec.Struct, frozen=True):
    amount: int


class Frozen(msgspec.Struct, frozen=True):
    pass


class Debited(msgspec.Struct, frozen=True):
    transfer: str
    amount: int
    to: str


class DebitRefused(msgspec.Struct, frozen=True):
    transfer: str


class Credited(msgspec.Struct, frozen=True):
    transfer: str
    amount: int


class CreditRefused(msgspec.Struct, frozen=True):
    transfer: str
    amount: int
    source: str


class Refunded(msgspec.Struct, frozen=True):
    transfer: str
    amount: int


class Wallet(msgspec.Struct, frozen=True):
    balance: int = 0
    frozen: bool = False


WalletCommand = Fund | Freeze | Debit | Credit | Refund
WalletEvent = Funded | Frozen | Debited | DebitRefused | Credited | CreditRefused | Refunded


def decide_wallet(state: Wallet, command: WalletCommand) -> list[WalletEvent]:
    match command:
        case Fund(amount):
            return [Funded(amount)]
        case Freeze():
            return [] if state.frozen else [Frozen()]
        case Debit(transfer, amount, to):
            if amount > state.balance:
                return [DebitRefused(transfer)]
            return [Debited(transfer, amount, to)]
        case Credit(transfer, amount, source):
            if state.frozen:
                return [CreditRefused(transfer, amount, source)]
            return [Credited(transfer, amount)]
        case Refund(transfer, amount):
            return [Refunded(transfer, amount)]
    raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover


def evolve_wallet(state: Wallet, event: WalletEvent) -> Wallet:
    match event:
        case Funded(amount) | Credited(_, amount) | Refunded(_, amount):
            return msgspec.structs.replace(state, balance=state.balance + amount)
        case Debited(_, amount, _):
            return msgspec.structs.replace(state, balance=state.balance - amount)
        case Frozen():
            return msgspec.structs.replace(state, frozen=True)
    return state  # a refusal changes nothing


wallets: ActorType[Wallet, WalletCommand, WalletEvent] = ActorType(
    name="wallet",
    initial=Wallet(),
    decide=decide_wallet,
    evolve=evolve_wallet,
    commands=[Fund, Freeze, Debit, Credit, Refund],
    events=[Funded, Frozen, Debited, DebitRefused, Credited, CreditRefused, Refunded],
)


# -- transfers -------------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True):
    source: str
    target: str
    amount: int


class Finish(msgspec.Struct, frozen=True):
    outcome: str
    """``completed``, ``refunded`` or ``failed``."""


class Requested(msgspec.Struct, frozen=True):
    source: str
    target: str
    amount: int


class Finished(msgspec.Struct, frozen=True):
    outcome: str


class Transfer(msgspec.Struct, frozen=True):
    status: str = ""
    """``""`` (none yet), ``requested``, then the outcome."""


TransferCommand = Request | Finish
TransferEvent = Requested | Finished


def decide_transfer(state: Transfer, command: TransferCommand) -> list[TransferEvent]:
    match command:
        case Request(source, target, amount):
            return [Requested(source, target, amount)] if not state.status else []
        case Finish(outcome):
            return [Finished(outcome)] if state.status == "requested" else []
    raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover


def evolve_transfer(state: Transfer, event: TransferEvent) -> Transfer:
    match event:
        case Requested():
            return Transfer("requested")
        case Finished(outcome):
            return Transfer(outcome)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


transfers: ActorType[Transfer, TransferCommand, TransferEvent] = ActorType(
    name="transfer",
    initial=Transfer(),
    decide=decide_transfer,
    evolve=evolve_transfer,
    commands=[Request, Finish],
    events=[Requested, Finished],
)


# -- the saga --------------------------------------------------------------------------

saga = ProcessManager("bank-transfers", [wallets, transfers])

Send = list[tuple[ActorRef[Any, Any, Any], object]]
"""What a saga handler returns: commands, each for one actor."""


@saga.on(Requested)
def debit(event: Event[Requested]) -> Send:
    p = event.payload
    return [(wallets(p.source), Debit(event.actor.id, p.amount, p.target))]


@saga.on(Debited)
def credit(event: Event[Debited]) -> Send:
    p = event.payload
    return [(wallets(p.to), Credit(p.transfer, p.amount, event.actor.id))]


@saga.on(Credited)
def complete(event: Event[Credited]) -> Send:
    return [(transfers(event.payload.transfer), Finish("completed"))]


@saga.on(CreditRefused)
def refund(event: Event[CreditRefused]) -> Send:
    p = event.payload
    return [(wallets(p.source), Refund(p.transfer, p.amount))]


@saga.on(Refunded)
def refunded(event: Event[Refunded]) -> Send:
    return [(transfers(event.payload.transfer), Finish("refunded"))]


@saga.on(DebitRefused)
def failed(event: Event[DebitRefused]) -> Send:
    return [(transfers(event.payload.transfer), Finish("failed"))]

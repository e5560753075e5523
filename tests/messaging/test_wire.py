"""Command envelopes and replies: what a worker accepts from the broker, and nothing else."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sourcery._core.errors import (
    DecodingError,
    EncodingError,
    InvalidActorRef,
    PayloadTooLarge,
    UnknownActorType,
    UnknownCommand,
)
from sourcery._core.records import ActorRef
from sourcery._messaging.wire import (
    CommandDecoder,
    CommandEnvelope,
    Reply,
    decode_reply,
    encode_command,
    encode_reply,
)
from sourcery.examples.bank import Deposit, Open, Withdraw, accounts

A1 = ActorRef("account", "a1")


def test_a_command_round_trips() -> None:
    decoder = CommandDecoder([accounts])
    data = encode_command(A1, Deposit(5), "m-1")
    envelope = decoder.envelope(data)
    assert (envelope.message_id, envelope.actor, envelope.command) == ("m-1", A1, "Deposit")
    assert decoder.command(envelope) == (A1, Deposit(5))


KEYS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=40
)
"""Every text that can be an id or a key: no lone surrogates, no NUL, at most 160 bytes."""


@given(actor_id=KEYS, owner=st.text(max_size=200), message_id=KEYS)
def test_any_valid_text_round_trips(actor_id: str, owner: str, message_id: str) -> None:
    ref = ActorRef("account", actor_id)
    data = encode_command(ref, Open(owner), message_id)
    decoder = CommandDecoder([accounts])
    envelope = decoder.envelope(data)
    assert envelope.message_id == message_id
    assert decoder.command(envelope) == (ref, Open(owner))


@pytest.mark.parametrize("bad", ["", "a\x00b", "\ud800", "x" * 256])
def test_ids_no_store_can_key_are_refused_before_sending(bad: str) -> None:
    with pytest.raises(InvalidActorRef):
        encode_command(A1, Open("ann"), bad)
    with pytest.raises(InvalidActorRef):
        ActorRef("account", bad)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode(["m", "account", "a1", "Deposit"]),
    ],
)
def test_malformed_envelopes_are_decoding_errors(data: bytes) -> None:
    with pytest.raises(DecodingError):
        CommandDecoder([accounts]).envelope(data)


def test_a_pickle_is_just_malformed() -> None:
    import pickle

    with pytest.raises(DecodingError):
        CommandDecoder([accounts]).envelope(pickle.dumps(Deposit))


def test_unknown_actor_type_and_command_are_typed() -> None:
    decoder = CommandDecoder([accounts])
    other = decoder.envelope(encode_command(ActorRef("order", "o1"), Deposit(5), "m"))
    with pytest.raises(UnknownActorType):
        decoder.command(other)
    forged = CommandEnvelope("m", "account", "a1", "Transfer", msgspec.msgpack.encode({}))
    with pytest.raises(UnknownCommand, match="Transfer"):
        decoder.command(decoder.envelope(msgspec.msgpack.encode(forged)))


def test_a_payload_of_the_wrong_shape_is_a_decoding_error() -> None:
    decoder = CommandDecoder([accounts])
    forged = CommandEnvelope("m", "account", "a1", "Deposit", msgspec.msgpack.encode({"x": 1}))
    with pytest.raises(DecodingError, match="Deposit"):
        decoder.command(decoder.envelope(msgspec.msgpack.encode(forged)))
    wrong = CommandEnvelope(
        "m",
        "account",
        "a1",
        "Withdraw",
        msgspec.msgpack.encode(Deposit("five")),  # type: ignore[arg-type]
    )
    with pytest.raises(DecodingError):
        decoder.command(decoder.envelope(msgspec.msgpack.encode(wrong)))


def test_invalid_message_ids_are_refused_both_ways() -> None:
    with pytest.raises(InvalidActorRef):
        encode_command(A1, Deposit(1), "")
    forged = CommandEnvelope(
        "bad\x00id", "account", "a1", "Deposit", msgspec.msgpack.encode(Deposit(1))
    )
    with pytest.raises(InvalidActorRef):
        CommandDecoder([accounts]).envelope(msgspec.msgpack.encode(forged))


def test_size_limits_hold_on_both_sides() -> None:
    with pytest.raises(PayloadTooLarge):
        encode_command(A1, Open("x" * 2000), "m", max_size=1000)
    data = encode_command(A1, Open("x" * 2000), "m")
    with pytest.raises(PayloadTooLarge):
        CommandDecoder([accounts], max_size=1000).envelope(data)


def test_an_unencodable_command_is_an_encoding_error() -> None:
    with pytest.raises(EncodingError):
        encode_command(A1, object(), "m")


def test_replies_round_trip_and_malformed_ones_are_typed() -> None:
    reply = Reply(
        message_id="m",
        actor_type="account",
        actor_id="a1",
        status="rejected",
        error_type="InsufficientFunds",
        error="balance 0 is less than 5",
    )
    back = decode_reply(encode_reply(reply))
    assert back == reply
    assert back.actor == A1
    assert not back.ok
    assert Reply(message_id="m", actor_type="a", actor_id="b", status="duplicate").ok
    with pytest.raises(DecodingError):
        decode_reply(b"\x93\x01")
    with pytest.raises(DecodingError):
        decode_reply(msgspec.msgpack.encode({"message_id": "m", "status": "exploded"}))


def test_commands_of_one_type_with_one_name_twice_are_refused() -> None:
    from sourcery._core.actor import ActorType
    from sourcery._core.errors import ConfigurationError

    class Deposit(msgspec.Struct):  # same name as the bank's
        amount: int

    twice: ActorType[int, object, object] = ActorType(
        name="twice",
        initial=0,
        decide=lambda s, c: [],
        evolve=lambda s, e: s,
        commands=[Withdraw, Deposit, accounts.commands[1]],
        events=accounts.events,
    )
    with pytest.raises(ConfigurationError, match="two commands"):
        CommandDecoder([twice])

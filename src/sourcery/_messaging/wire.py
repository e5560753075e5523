"""What crosses the broker: command envelopes and the replies workers send back.

Both are MessagePack through msgspec, typed on decode: a message from outside can only
become one of the command types an actor type declares, or a typed error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from sourcery._core.actor import ActorType
from sourcery._core.errors import (
    ConfigurationError,
    DecodingError,
    EncodingError,
    PayloadTooLarge,
    UnknownActorType,
    UnknownCommand,
)
from sourcery._core.records import ActorRef, check_text

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "CommandDecoder",
    "CommandEnvelope",
    "Reply",
    "decode_reply",
    "encode_command",
    "encode_reply",
]

DEFAULT_MAX_MESSAGE = 1 << 20
"""Largest encoded command envelope accepted by default: 1 MiB."""


class CommandEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """One command on its way to an actor. ``message_id`` makes a re-delivery harmless."""

    message_id: str
    actor_type: str
    actor_id: str
    command: str
    """The command's type name, as the actor type declares it."""
    payload: bytes

    @property
    def actor(self) -> ActorRef:
        return ActorRef(self.actor_type, self.actor_id)


Status = Literal["ok", "duplicate", "rejected", "failed"]


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's answer to one command.

    ``duplicate`` means the message id was processed before and nothing new was written;
    ``rejected`` means decide refused it; ``failed`` means it could not be processed and
    went to the dead-letter queue. ``events`` names the types of the events it produced.
    """

    message_id: str
    actor_type: str
    actor_id: str
    status: Status
    events: tuple[str, ...] = ()
    error_type: str = ""
    error: str = ""

    @property
    def actor(self) -> ActorRef:
        return ActorRef(self.actor_type, self.actor_id)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "duplicate")


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(CommandEnvelope)
_reply_decoder = msgspec.msgpack.Decoder(Reply)


def command_name(cls: type) -> str:
    return cls.__name__


def encode_command(
    actor: ActorRef, command: object, message_id: str, *, max_size: int = DEFAULT_MAX_MESSAGE
) -> bytes:
    """The envelope of ``command`` for ``actor``, refusing what a worker would refuse."""
    check_text(message_id, "message id")
    try:
        payload = _encoder.encode(command)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodingError(f"cannot encode command {type(command).__name__}: {exc}") from exc
    envelope = CommandEnvelope(
        message_id, actor.type, actor.id, command_name(type(command)), payload
    )
    data = _encoder.encode(envelope)
    if len(data) > max_size:
        raise PayloadTooLarge(
            f"command {type(command).__name__} encodes to {len(data)} bytes; "
            f"the limit is {max_size}"
        )
    return data


class CommandDecoder:
    """Turns envelopes back into commands of the actor types a worker runs."""

    def __init__(
        self,
        actor_types: Iterable[ActorType[Any, Any, Any]],
        *,
        max_size: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.max_size = max_size
        self._decoders: dict[str, dict[str, msgspec.msgpack.Decoder[Any]]] = {}
        for spec in actor_types:
            names = [command_name(cls) for cls in spec.commands]
            if len(set(names)) != len(names):
                raise ConfigurationError(f"actor type {spec.name!r} has two commands with one name")
            self._decoders[spec.name] = {
                command_name(cls): msgspec.msgpack.Decoder(cls) for cls in spec.commands
            }

    def envelope(self, data: bytes) -> CommandEnvelope:
        """Parse an envelope without decoding its command (to learn its id and actor)."""
        if len(data) > self.max_size:
            raise PayloadTooLarge(
                f"a command message of {len(data)} bytes; the limit is {self.max_size}"
            )
        try:
            envelope = _envelope_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"malformed command message: {exc}") from exc
        check_text(envelope.message_id, "message id")
        return envelope

    def command(self, envelope: CommandEnvelope) -> tuple[ActorRef, object]:
        """The actor and the typed command an envelope carries."""
        actor = envelope.actor
        commands = self._decoders.get(actor.type)
        if commands is None:
            raise UnknownActorType(f"this worker has no actor type {actor.type!r}")
        decoder = commands.get(envelope.command)
        if decoder is None:
            raise UnknownCommand(
                f"actor type {actor.type!r} has no command type {envelope.command!r}"
            )
        try:
            return actor, decoder.decode(envelope.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"cannot decode command {envelope.command!r}: {exc}") from exc


def encode_reply(reply: Reply) -> bytes:
    return _encoder.encode(reply)


def decode_reply(data: bytes) -> Reply:
    try:
        return _reply_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"malformed reply: {exc}") from exc

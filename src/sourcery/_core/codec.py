"""Turning user values into stored bytes and back, for one actor type.

msgspec's MessagePack is the only format: it is typed on decode, it never runs code from
the data (no pickle), and it is fast enough to sit on the hot path of every command.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from sourcery._core.actor import ActorType, Event
from sourcery._core.errors import DecodingError, EncodingError, PayloadTooLarge, UnknownEventType
from sourcery._core.ids import id_from_bytes
from sourcery._core.records import ActorRef, EventRecord

__all__ = ["DEFAULT_MAX_PAYLOAD", "Codec"]

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")

DEFAULT_MAX_PAYLOAD = 1 << 20
"""Largest encoded event payload or state accepted by default: 1 MiB."""


class Codec(Generic[S, C, E]):
    """Encodes events and states of one actor type, enforcing the size limit."""

    __slots__ = (
        "_decoders",
        "_encoder",
        "_initial",
        "_names",
        "_state_decoder",
        "_versions",
        "kind",
        "max_payload",
    )

    def __init__(self, kind: ActorType[S, C, E], max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.kind = kind
        self.max_payload = max_payload
        self._encoder = msgspec.msgpack.Encoder()
        self._names: dict[type, str] = {cls: kind.event_name(cls) for cls in kind.events}
        self._versions: dict[str, int] = {
            name: kind.event_version(name) for name in self._names.values()
        }
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
            name: msgspec.msgpack.Decoder(cls) for cls, name in self._names.items()
        }
        state_type: Any = kind.state_type if kind.state_type is not None else type(kind.initial)
        self._state_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(state_type)
        self._initial: bytes | None = None

    def event_type(self, payload: object) -> tuple[str, int] | None:
        """The stored name and version of a payload, or None if it is not a declared event."""
        name = self._names.get(type(payload))
        if name is None:
            return None
        return name, self._versions[name]

    def _encode(self, value: object, what: str) -> bytes:
        try:
            data = self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodingError(f"cannot encode {what} {type(value).__name__}: {exc}") from exc
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                f"{what} {type(value).__name__} encodes to {len(data)} bytes; "
                f"the limit is {self.max_payload}"
            )
        return data

    def encode_payload(self, payload: object) -> bytes:
        return self._encode(payload, "event")

    def encode_state(self, state: S) -> bytes:
        return self._encode(state, "state")

    def fresh_initial(self) -> S:
        """A private copy of the initial state: an ``evolve`` that changes its input in place
        must not change the state every other actor starts from."""
        if self._initial is None:
            self._initial = self.encode_state(self.kind.initial)
        return self.decode_state(self._initial)

    def decode_state(self, data: bytes) -> S:
        try:
            state: S = self._state_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"cannot decode a {self.kind.name} state: {exc}") from exc
        return state

    def decode_payload(self, name: str, version: int, data: bytes) -> E:
        decoder = self._decoders.get(name)
        if decoder is None:
            raise UnknownEventType(f"actor type {self.kind.name!r} has no event type {name!r}")
        current = self._versions[name]
        try:
            if version == current:
                payload: E = decoder.decode(data)
                return payload
            if not 1 <= version < current:
                raise DecodingError(
                    f"event {name!r} has schema version {version}; this code knows 1..{current}"
                )
            fields = msgspec.msgpack.decode(data)
            if not isinstance(fields, dict):
                raise DecodingError(f"event {name!r} v{version} is not a record to upcast")
            for step, upcast in enumerate(self.kind.upcasters[name][version - 1 :], start=version):
                try:
                    fields = upcast(fields)
                except Exception as exc:
                    raise DecodingError(
                        f"the upcaster of {name!r} from v{step} failed: {exc!r}"
                    ) from exc
                if not isinstance(fields, dict):
                    raise DecodingError(f"the upcaster of {name!r} from v{step} gave no dict")
            cls = next(c for c, n in self._names.items() if n == name)
            converted: E = msgspec.convert(fields, cls)
            return converted
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"cannot decode event {name!r} v{version}: {exc}") from exc

    def decode_event(self, record: EventRecord, actor: ActorRef | None = None) -> Event[E]:
        return Event(
            id=id_from_bytes(record.id),
            actor=actor if actor is not None else record.actor,
            timestamp=record.timestamp,
            initiated_by=record.initiated_by,
            writer=record.writer,
            n=record.n,
            type=record.type,
            version=record.version,
            payload=self.decode_payload(record.type, record.version, record.payload),
        )

"""The cache interface: best known states of recently used actors, never trusted blindly.

A cache entry records which heads and which clock its state was built from. The runtime
uses it only when the store's heads are exactly those heads and the store holds no event
beyond that clock; any other entry is stale and is ignored and replaced. So a cache can be
lost, stale, corrupt or down without ever producing a wrong state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgspec

from sourcery._core.clock import VectorClock
from sourcery._core.errors import DecodingError
from sourcery._core.records import ActorRef

__all__ = ["Cache", "CacheEntry"]


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    actor_type: str
    actor_id: str
    heads: list[bytes]
    clock: bytes
    state: bytes
    latest: int
    digest: bytes = b""


def _digest(wire: _Wire) -> bytes:
    """A checksum over the rest, so that a damaged entry is refused, not believed."""
    h = hashlib.blake2b(digest_size=16)
    for part in (wire.actor_type.encode(), wire.actor_id.encode(), *wire.heads, wire.clock):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(wire.latest.to_bytes(8, "big", signed=True))
    h.update(wire.state)
    return h.digest()


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """An actor's state as of ``clock``, built on the snapshots ``heads``."""

    actor: ActorRef
    heads: tuple[VectorClock, ...]
    clock: VectorClock
    state: bytes
    latest: int = 0
    """The latest event timestamp the state reflects, so new events are stamped after it."""

    def __post_init__(self) -> None:
        # One order for the heads, so equal entries compare equal after a round trip.
        ordered = tuple(sorted(self.heads, key=VectorClock.to_bytes))
        object.__setattr__(self, "heads", ordered)

    def to_bytes(self) -> bytes:
        wire = _Wire(
            self.actor.type,
            self.actor.id,
            sorted(h.to_bytes() for h in self.heads),
            self.clock.to_bytes(),
            self.state,
            self.latest,
        )
        return _encoder.encode(msgspec.structs.replace(wire, digest=_digest(wire)))

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """Decode an entry; anything malformed raises DecodingError."""
        try:
            wire = _decoder.decode(data)
            if wire.digest != _digest(wire):
                raise DecodingError("cache entry fails its checksum")
            return cls(
                actor=ActorRef(wire.actor_type, wire.actor_id),
                heads=tuple(VectorClock.from_bytes(h) for h in wire.heads),
                clock=VectorClock.from_bytes(wire.clock),
                state=wire.state,
                latest=wire.latest,
            )
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError) as exc:
            raise DecodingError(f"malformed cache entry: {exc}") from exc


@runtime_checkable
class Cache(Protocol):
    """Where recently used actors' states are kept between workers and restarts."""

    async def get(self, actor: ActorRef) -> CacheEntry | None:
        """The entry for ``actor``, or None. May raise StoreUnavailable or DecodingError."""

    async def put(self, entry: CacheEntry) -> None:
        """Keep ``entry``, replacing the actor's previous one. May raise StoreUnavailable."""

    async def delete(self, actor: ActorRef) -> None:
        """Forget the actor's entry, if any."""

    async def aclose(self) -> None:
        """Release connections. Idempotent."""

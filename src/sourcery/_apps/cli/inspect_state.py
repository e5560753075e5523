"""The current state ``sourcery inspect`` shows for an actor: its head's state plus the
loose events, in replay order, decoded with the user's actor type (``--app``).

Inspecting writes nothing, so an actor with several heads (siblings) is shown as such: the
next read by a runtime resolves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sourcery._core.actor import ActorType
from sourcery._core.codec import Codec
from sourcery._core.errors import ConfigurationError
from sourcery._core.records import ActorRef, EventRecord, SnapshotRecord

__all__ = ["actor_kind", "current_state"]


def actor_kind(
    types: Sequence[ActorType[Any, Any, Any]], actor: ActorRef
) -> ActorType[Any, Any, Any]:
    """The actor type of ``actor`` among the app's ``types``."""
    for kind in types:
        if kind.name == actor.type:
            return kind
    known = ", ".join(sorted(t.name for t in types)) or "none"
    raise ConfigurationError(f"the app has no actor type {actor.type!r} (it has: {known})")


def current_state(
    kind: ActorType[Any, Any, Any] | None,
    heads: Sequence[SnapshotRecord],
    loose: Sequence[EventRecord],
) -> dict[str, Any]:
    """``value``: the state as plain JSON values (None when it cannot be shown here, and
    ``note`` says why); ``loose_events_applied``: how many events it adds to the head."""
    if kind is None:
        return _not_shown("give --app MODULE:ATTR to decode it with your actor type")
    if len(heads) > 1:
        return _not_shown(f"{len(heads)} heads (siblings): the next read resolves them")
    codec = Codec(kind)
    state = codec.decode_state(heads[0].state) if heads else codec.fresh_initial()
    events = sorted(loose, key=lambda e: e.order)
    for record in events:
        state = kind.evolve(
            state, codec.decode_payload(record.type, record.version, record.payload)
        )
    return {
        "value": msgspec.to_builtins(state),
        "loose_events_applied": len(events),
        "note": None,
    }


def _not_shown(why: str) -> dict[str, Any]:
    return {"value": None, "loose_events_applied": None, "note": why}

"""An actor's resolved state, read as the runtime loads it, without writing anything.

Heads, merged in memory if there are several (the merge is deterministic, so this is the
state the runtime will commit when it heals the actor), plus the loose events in replay
order. A state projection computes it for the actors a batch touched, so after replicas
heal its table equals ``Runtime.state`` though the events arrived out of replay order.
"""

from __future__ import annotations

from typing import Any

from sourcery._core.clock import VectorClock
from sourcery._core.codec import Codec
from sourcery._core.errors import HandlerError
from sourcery._core.history import advance, fold
from sourcery._core.records import ActorRef
from sourcery._engine.resolution import resolve
from sourcery._stores import Store

__all__ = ["resolved_state"]


async def resolved_state(store: Store, codec: Codec[Any, Any, Any], actor: ActorRef) -> Any:
    """What a runtime opened on ``store`` now would return for ``actor``."""
    heads = await store.heads(actor)
    if len(heads) > 1:
        base: Any = (await resolve(store, codec.kind, codec, heads)).snapshot
    else:
        base = heads[0] if heads else None
    state = codec.decode_state(base.state) if base is not None else codec.fresh_initial()
    clock = base.clock if base is not None else VectorClock()
    _, applied = advance(clock, await store.loose_events(actor, clock))
    payloads = [codec.decode_payload(r.type, r.version, r.payload) for r in applied]
    try:
        return fold(codec.kind.evolve, state, payloads)
    except Exception as exc:
        raise HandlerError(f"evolve failed replaying {actor}: {exc!r}") from exc

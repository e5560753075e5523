"""The runtime: one mailbox per actor, group-committed events, snapshots, passivation.

An actor in memory is a cell (``sourcery._engine.cells``). A command holds the cell's lock
from decide to commit, so one actor sees one message at a time while other actors proceed
and share transactions. This module orchestrates; the steps that need no store live in
``sourcery._engine.commands``, healing in ``sourcery._engine.resolution``, the state cache
in ``sourcery._engine.writebehind``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sourcery._caches import Cache, CacheEntry, open_cache
from sourcery._core.actor import ActorType, Outcome
from sourcery._core.clock import VectorClock
from sourcery._core.codec import DEFAULT_MAX_PAYLOAD
from sourcery._core.config import cache_url, store_url
from sourcery._core.errors import (
    Abandoned,
    ClosedError,
    ConfigurationError,
    DecodingError,
    HandlerError,
    StoreUnavailable,
    UnknownActorType,
    UnknownCommand,
)
from sourcery._core.history import advance, fold, replay_order
from sourcery._core.ids import IdGenerator
from sourcery._core.records import ActorRef, CommitBatch, EventRecord, SnapshotRecord, check_text
from sourcery._engine import commands
from sourcery._engine.cells import ActorKind, Cell, Cells
from sourcery._engine.resolution import ResolutionStats, resolve
from sourcery._engine.writebehind import WriteBehind
from sourcery._io.opening import Opening
from sourcery._stores import Store, open_store

__all__ = ["DEFAULT_MAX_ACTORS", "Runtime", "WaitOut"]

DEFAULT_MAX_ACTORS = 10_000

WaitOut = Callable[[StoreUnavailable, int], Awaitable[None]]
"""``wait_out(error, attempt)``: called with the actor's turn held when the store could not
be reached on the ``attempt``-th try; it returns (after a pause) to try again, or raises."""

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")


class Runtime:
    """Runs actor types on a store. Open with ``async with Runtime.open(url, [types])``."""

    def __init__(
        self,
        store: Store,
        actor_types: Iterable[ActorType[Any, Any, Any]],
        *,
        writer: str | None = None,
        max_actors: int = DEFAULT_MAX_ACTORS,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        owns_store: bool = False,
        cache: Cache | None = None,
        owns_cache: bool = False,
    ) -> None:
        """Run ``actor_types`` on an open ``store``.

        The caller keeps the store (and must have claimed the writer id with
        ``store.register_writer``) unless ``owns_store``; ``Runtime.open`` does both.
        ``writer`` names the writer in its id (``name.<random>``); the id itself is always
        new, so that no two events can ever get the same dot.
        """
        if max_actors < 1:
            raise ConfigurationError(f"max_actors must be at least 1, got {max_actors}")
        if max_payload < 1:
            raise ConfigurationError(f"max_payload must be at least 1, got {max_payload}")
        self.store = store
        self.owns_store = owns_store
        self.cache = cache
        self.owns_cache = owns_cache
        # Every open is a new writer, even under a name given before: a store wiped or
        # restored from an old copy has forgotten the name, and reusing it would give the
        # same dots to different events.
        suffix = secrets.token_hex(8)
        self.writer = suffix if writer is None else check_text(f"{writer}.{suffix}", "writer name")
        self._behind = WriteBehind(cache, self.writer) if cache is not None else None
        self._kinds: dict[str, ActorKind] = {}
        for spec in actor_types:
            if spec.name in self._kinds:
                raise ConfigurationError(f"actor type {spec.name!r} given twice")
            self._kinds[spec.name] = ActorKind(spec, max_payload)
        self._cells = Cells(max_actors)
        self._ids = IdGenerator()
        self.cache_hits = 0
        """Loads answered by a validated cache entry instead of the store's events."""
        self.resolutions = ResolutionStats()
        """Divergences this runtime healed, events it merged, compensations it recorded."""
        self._closed = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        actor_types: Iterable[ActorType[Any, Any, Any]] = (),
        **options: Any,
    ) -> Opening[Runtime]:
        """Open the store at ``url`` (default: ``SOURCERY_STORE``) and claim a writer id.

        ``cache=URL`` (default: ``SOURCERY_CACHE``, else none) adds a cache of actor
        states, ``memory://`` or ``redis://…``. Use as ``async with Runtime.open(...) as rt``
        or ``rt = await Runtime.open(...)``.
        """
        url = store_url(url)
        types = list(actor_types)

        async def opened() -> Runtime:
            rest = dict(options)
            cache_at = cache_url(rest.pop("cache", None))
            store = await open_store(url)
            cache: Cache | None = None
            try:
                cache = await open_cache(cache_at) if cache_at else None
                runtime = cls(store, types, owns_store=True, cache=cache, owns_cache=True, **rest)
                await store.register_writer(runtime.writer)
            except BaseException:
                if cache is not None:
                    await cache.aclose()
                await store.aclose()
                raise
            return runtime

        return Opening(opened)

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish the commands under way, then close the store if it owns it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()
        if self._behind is not None:
            await self._behind.flush()
        if self.cache is not None and self.owns_cache:
            await self.cache.aclose()
        if self.owns_store:
            await self.store.aclose()

    @property
    def max_actors(self) -> int:
        return self._cells.limit

    @property
    def actors_in_memory(self) -> int:
        return len(self._cells)

    # -- the public operations -----------------------------------------------------------

    async def send(
        self,
        actor: ActorRef[S, C, E],
        command: C,
        *,
        message_id: str | None = None,
        valid: Callable[[], bool] | None = None,
        wait_out: WaitOut | None = None,
        tenure: object = None,
    ) -> Outcome[S, E]:
        """Decide ``command`` on ``actor``; return once its events are durable.

        Raises the actor type's :class:`Rejected` subclass, :class:`UnknownCommand`,
        :class:`HandlerError` or an encoding error; in each case nothing was stored.
        A ``message_id`` that was processed before returns the earlier events and writes
        nothing. ``valid`` is asked when the actor's turn comes and again just before the
        write; if it says no, :class:`Abandoned` is raised and nothing is written (a worker
        uses it to drop a delivery the broker has already given to another worker).

        ``wait_out`` (see :data:`WaitOut`) waits out an unreachable store *inside* the
        actor's turn: the command is tried again from the start (the actor reloaded, the
        message id looked up again, ``valid`` asked again) before any later command of the
        actor may run, so an outage never lets a later command pass it. Without it,
        :class:`StoreUnavailable` is raised at once.

        ``tenure`` names where the command came from (a worker's turn as the consumer of a
        queue): when it differs from the actor's previous command's, the actor is reloaded
        from the store first, since another writer may have written it in between (a queue
        that went to another worker and came back); deciding on the state held in memory
        would put the new command before those writes.
        """
        kind = self._kind(actor)
        if type(command) not in kind.commands:
            raise UnknownCommand(
                f"{type(command).__name__} is not a command of actor type {kind.spec.name!r}"
            )
        if message_id is not None:
            check_text(message_id, "message id")
        with self._using():
            cell = self._cells.use(actor, kind)
            try:
                async with cell.lock:
                    if tenure is not None and tenure is not cell.tenure:
                        cell.loaded = False
                        cell.tenure = tenure
                    attempt = 0
                    while True:
                        try:
                            return await self._process(cell, command, message_id, valid)
                        except StoreUnavailable as exc:
                            # Whatever was read or written may be stale: start afresh.
                            cell.loaded = False
                            if wait_out is None:
                                raise
                            attempt += 1
                            await wait_out(exc, attempt)
            finally:
                self._cells.release(cell)

    async def state(self, actor: ActorRef[S, Any, Any], *, refresh: bool = False) -> S:
        """The best known current state: the head snapshot plus the events since.

        ``refresh`` reloads from the store, to see what other writers wrote.
        """
        cell = await self._loaded_cell(actor, refresh=refresh)
        state: S = cell.state
        return state

    async def clock(self, actor: ActorRef) -> VectorClock:
        """The vector clock of the state ``state(actor)`` returns."""
        return (await self._loaded_cell(actor, clock=True)).clock

    def forget(self, actors: Iterable[ActorRef]) -> None:
        """Reload these actors from the store at their next use.

        For records that arrived from elsewhere (replication, another writer): the next
        read or write sees them, and resolves new heads if there are several.
        """
        for ref in actors:
            cell = self._cells.get(ref)
            if cell is not None:
                cell.loaded = False

    # -- cells ---------------------------------------------------------------------------

    def _kind(self, actor: ActorRef) -> ActorKind:
        if not isinstance(actor, ActorRef):
            raise TypeError(f"expected an ActorRef, got {type(actor).__name__}")
        kind = self._kinds.get(actor.type)
        if kind is None:
            raise UnknownActorType(f"this runtime has no actor type {actor.type!r}")
        return kind

    def _using(self) -> _Using:
        if self._closed:
            raise ClosedError("the runtime is closed")
        return _Using(self)

    async def _loaded_cell(
        self, actor: ActorRef, *, refresh: bool = False, clock: bool = False
    ) -> Cell:
        """The actor's cell, loaded (``refresh``: again), its clock brought up to date."""
        kind = self._kind(actor)
        with self._using():
            cell = self._cells.use(actor, kind)
            try:
                async with cell.lock:
                    if refresh or not cell.loaded:
                        await self._load(cell)
                    if clock:
                        cell.current_clock(self.writer)
                    return cell
            finally:
                self._cells.release(cell)

    # -- loading -------------------------------------------------------------------------

    async def _load(self, cell: Cell) -> None:
        """Head snapshot (healing several heads first) plus the loose events, in order."""
        cell.loaded = False
        if cell.pending is not None:
            await asyncio.wait([cell.pending])
            cell.pending = None
        entry = await self._behind.get(cell.ref) if self._behind is not None else None
        heads = await self.store.heads(cell.ref)
        if entry is not None and await self._load_cached(cell, entry, heads):
            return
        spec = cell.kind.spec
        codec = cell.kind.codec
        base = await self._heal(cell, heads) if len(heads) > 1 else (heads[0] if heads else None)
        base_state = codec.decode_state(base.state) if base is not None else codec.fresh_initial()
        base_clock = base.clock if base is not None else VectorClock()
        loose = await self.store.loose_events(cell.ref, base_clock)
        clock, applied = advance(base_clock, loose)
        payloads = [codec.decode_payload(r.type, r.version, r.payload) for r in applied]
        try:
            state = fold(spec.evolve, base_state, payloads)
        except Exception as exc:
            raise HandlerError(f"evolve failed replaying {cell.ref}: {exc!r}") from exc
        latest = max((r.timestamp for r in applied), default=0)
        if base is not None:
            latest = max(latest, base.timestamp)
        cell.base = base
        cell.base_clock = base_clock
        cell.since = list(zip(applied, payloads, strict=True))
        cell.since_count = len(applied)
        self._loaded(cell, state, clock, latest)
        if self._behind is not None:
            self._behind.mark(cell)

    async def _heal(self, cell: Cell, heads: list[SnapshotRecord]) -> SnapshotRecord:
        """Merge several heads into one snapshot and make it durable."""
        self.resolutions.divergences += 1
        plan = await resolve(self.store, cell.kind.spec, cell.kind.codec, heads)
        await self.store.commit(
            CommitBatch(events=list(plan.compensations), snapshots=[(plan.snapshot, plan.pack)])
        )
        self.resolutions.record(plan)
        return plan.snapshot

    def _loaded(self, cell: Cell, state: Any, clock: VectorClock, latest: int) -> None:
        # What decide sees must replay before what it causes, whatever the wall clocks say.
        self._ids.advance_past(latest)
        cell.state = state
        cell.clock = clock
        cell.latest = latest
        cell.own = clock.get(self.writer)
        cell.loaded = True

    async def _load_cached(
        self, cell: Cell, entry: CacheEntry, heads: list[SnapshotRecord]
    ) -> bool:
        """Use a cache entry only if it is exactly what the store would give."""
        if len(heads) > 1 or entry.heads != tuple(h.clock for h in heads):
            return False
        base = heads[0] if heads else None
        base_clock = base.clock if base is not None else VectorClock()
        frontier = await self.store.frontier(cell.ref)
        if not (frontier <= entry.clock <= (frontier | base_clock)) or not (
            base_clock <= entry.clock
        ):
            return False
        try:
            state = cell.kind.codec.decode_state(entry.state)
        except DecodingError:
            return False
        cell.base = base
        cell.base_clock = base_clock
        cell.since = None
        cell.since_count = entry.clock.total() - base_clock.total()
        self._loaded(cell, state, entry.clock, entry.latest)
        self.cache_hits += 1
        return True

    async def _since(self, cell: Cell) -> list[tuple[EventRecord, Any]]:
        """The events since the cell's base, read back after a cache hit made it skip them."""
        if cell.since is None:
            codec = cell.kind.codec
            loose = await self.store.loose_events(cell.ref, cell.base_clock)
            clock = cell.current_clock(self.writer)
            mine = sorted((r for r in loose if r.n <= clock.get(r.writer)), key=replay_order)
            cell.since = [(r, codec.decode_payload(r.type, r.version, r.payload)) for r in mine]
        return cell.since

    # -- processing ----------------------------------------------------------------------

    async def _process(
        self,
        cell: Cell,
        command: object,
        message_id: str | None,
        valid: Callable[[], bool] | None = None,
    ) -> Outcome[Any, Any]:
        """One command, its lock held: dedupe, decide, evolve, commit, then apply."""
        if valid is not None and not valid():
            raise Abandoned(f"command to {cell.ref} withdrawn before its turn")
        if not cell.loaded:
            await self._load(cell)
        if message_id is not None:
            earlier = await self._earlier(cell, message_id)
            if earlier is not None:
                return earlier
        payloads = commands.decide(cell, command)
        given = message_id is not None
        if message_id is None:
            message_id = commands.generated_message_id(self._ids.new())
        work = commands.draft(cell, payloads, message_id, self.writer, self._ids)
        due = cell.since_count + len(work.records) >= cell.kind.spec.snapshot_every
        commands.evolve(cell, work, await self._since(cell) if due else cell.since)
        batch = commands.plan_batch(cell, work, given=given, due=due, writer=self.writer)
        if valid is not None and not valid():
            cell.loaded = False  # decide or evolve may have changed the state in place
            raise Abandoned(f"command to {cell.ref} withdrawn before its write")
        if batch.events or batch.messages or batch.snapshots:
            await self._commit(cell, batch)
        self._apply(cell, work)
        return Outcome(actor=cell.ref, events=tuple(work.events), state=work.state)

    async def _earlier(self, cell: Cell, message_id: str) -> Outcome[Any, Any] | None:
        """What a message processed before produced, if it was: nothing is written again."""
        seen = await self.store.message(cell.ref, message_id)
        if seen is None:
            return None
        earlier = await self.store.events(cell.ref, seen.dots)
        decode = cell.kind.codec.decode_event
        return Outcome(
            actor=cell.ref,
            events=tuple(decode(r, cell.ref) for r in earlier),
            state=cell.state,
            duplicate=True,
        )

    async def _commit(self, cell: Cell, batch: CommitBatch) -> None:
        try:
            await self.store.commit(batch)
        except asyncio.CancelledError:
            # The write goes on. An empty batch queued behind it settles after it does;
            # the actor is reloaded only then, so nobody reuses its dots.
            cell.loaded = False
            cell.pending = asyncio.ensure_future(self.store.commit(CommitBatch()))
            raise
        except BaseException:
            # The outcome may be unknown (a lost connection): rebuild from the store.
            cell.loaded = False
            raise

    def _apply(self, cell: Cell, work: commands.Draft) -> None:
        """The command is durable: the cell takes its state, and its snapshot if it made one."""
        snapshot = work.snapshot
        if snapshot is not None:
            cell.base = snapshot
            cell.base_clock = snapshot.clock
            cell.clock = snapshot.clock
            cell.since = []
            cell.since_count = 0
        else:
            cell.since = work.since
            cell.since_count += len(work.records)
        if work.records:
            cell.latest = max(cell.latest, work.records[-1].timestamp)
        cell.state = work.state
        cell.own = work.n
        if work.records and self._behind is not None:
            self._behind.mark(cell)


class _Using:
    """Counts operations under way so that ``aclose`` can wait for them."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __enter__(self) -> None:
        rt = self._runtime
        rt._busy += 1
        rt._idle.clear()

    def __exit__(self, *exc: object) -> None:
        rt = self._runtime
        rt._busy -= 1
        if rt._busy == 0:
            rt._idle.set()

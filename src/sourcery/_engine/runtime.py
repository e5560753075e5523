"""The runtime: one mailbox per actor, group-committed events, snapshots, passivation.

An actor in memory is a *cell*: the snapshot it was loaded from, the events applied since
(in replay order), and the resulting state and clock. A command holds the cell's lock from
decide to commit, so one actor sees one message at a time while other actors proceed and
share transactions. Cells nobody uses are dropped beyond ``max_actors``; the store can
always rebuild them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

from sourcery._caches import Cache, CacheEntry, open_cache
from sourcery._core.actor import ActorType, Event, Outcome
from sourcery._core.clock import VectorClock
from sourcery._core.codec import DEFAULT_MAX_PAYLOAD, Codec
from sourcery._core.config import cache_url, store_url
from sourcery._core.errors import (
    Abandoned,
    ClosedError,
    ConfigurationError,
    DecodingError,
    EncodingError,
    HandlerError,
    Rejected,
    SourceryError,
    UnknownActorType,
    UnknownCommand,
)
from sourcery._core.history import advance, fold, replay_order
from sourcery._core.ids import IdGenerator, id_to_bytes
from sourcery._core.records import (
    ActorRef,
    CommitBatch,
    EventRecord,
    MessageRecord,
    PackRecord,
    SnapshotRecord,
    check_text,
)
from sourcery._engine.resolution import ResolutionStats, resolve
from sourcery._stores import Store, open_store

__all__ = ["DEFAULT_MAX_ACTORS", "Runtime"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ACTORS = 10_000
CACHE_RETRY_SECONDS = 1.0
"""After a cache failure, commands skip the cache this long before trying it again."""
CACHE_WRITE_DELAY = 0.02
"""Entries are written behind the commands, at most this often per actor."""


S = TypeVar("S")


class _Kind:
    """An actor type with what the runtime derives from it once."""

    __slots__ = ("codec", "commands", "spec")

    def __init__(self, spec: ActorType[Any, Any, Any], max_payload: int) -> None:
        self.spec = spec
        self.codec: Codec[Any, Any, Any] = Codec(spec, max_payload)
        self.commands = frozenset(spec.commands)


class _Cell:
    """One actor held in memory."""

    __slots__ = (
        "base",
        "base_clock",
        "clock",
        "kind",
        "latest",
        "loaded",
        "lock",
        "own",
        "pending",
        "ref",
        "since",
        "since_count",
        "state",
        "users",
    )

    def __init__(self, ref: ActorRef, kind: _Kind) -> None:
        self.ref = ref
        self.kind = kind
        self.lock = asyncio.Lock()
        self.users = 0
        self.loaded = False
        self.base: SnapshotRecord | None = None
        self.base_clock = VectorClock()
        self.since: list[tuple[EventRecord, Any]] | None = []
        """Events applied since ``base``, in replay order; None until needed after a cache hit."""
        self.since_count = 0
        self.latest = 0
        """The latest timestamp among the events the state reflects."""
        self.state: Any = kind.spec.initial
        self.clock = VectorClock()
        """Covers what was loaded; this runtime's own newer events are counted in ``own``."""
        self.own = 0
        self.pending: asyncio.Future[None] | None = None
        """A write whose waiter was cancelled: settle it before touching the actor again."""

    def current_clock(self, writer: str) -> VectorClock:
        if self.own > self.clock.get(writer):
            self.clock = self.clock.with_entry(writer, self.own)
        return self.clock


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
        self._cache_retry_at = 0.0
        self._cache_failing = False
        self._dirty: dict[ActorRef, _Cell] = {}
        self._cache_task: asyncio.Task[None] | None = None
        # Every open is a new writer, even under a name given before: a store wiped or
        # restored from an old copy has forgotten the name, and reusing it would give the
        # same dots to different events.
        suffix = secrets.token_hex(8)
        self.writer = suffix if writer is None else check_text(f"{writer}.{suffix}", "writer name")
        self.max_actors = max_actors
        self._kinds: dict[str, _Kind] = {}
        for spec in actor_types:
            if spec.name in self._kinds:
                raise ConfigurationError(f"actor type {spec.name!r} given twice")
            self._kinds[spec.name] = _Kind(spec, max_payload)
        self._cells: OrderedDict[ActorRef, _Cell] = OrderedDict()
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
    ) -> _Opening:
        """Open the store at ``url`` (default: ``SOURCERY_STORE``) and claim a writer id.

        ``cache=URL`` (default: ``SOURCERY_CACHE``, else none) adds a cache of actor
        states, ``memory://`` or ``redis://…``. Use as ``async with Runtime.open(...) as rt``
        or ``rt = await Runtime.open(...)``.
        """
        return _Opening(cls, store_url(url), list(actor_types), options)

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
        if self._cache_task is not None:
            await self._cache_task
        if self.cache is not None and self.owns_cache:
            await self.cache.aclose()
        if self.owns_store:
            await self.store.aclose()

    @property
    def actors_in_memory(self) -> int:
        return len(self._cells)

    # -- the public operations -----------------------------------------------------------

    async def send(
        self,
        actor: ActorRef,
        command: object,
        *,
        message_id: str | None = None,
        valid: Callable[[], bool] | None = None,
    ) -> Outcome[Any, Any]:
        """Decide ``command`` on ``actor``; return once its events are durable.

        Raises the actor type's :class:`Rejected` subclass, :class:`UnknownCommand`,
        :class:`HandlerError` or an encoding error; in each case nothing was stored.
        A ``message_id`` that was processed before returns the earlier events and writes
        nothing. ``valid`` is asked when the actor's turn comes and again just before the
        write; if it says no, :class:`Abandoned` is raised and nothing is written (a worker
        uses it to drop a delivery the broker has already given to another worker).
        """
        kind = self._kind(actor)
        if type(command) not in kind.commands:
            raise UnknownCommand(
                f"{type(command).__name__} is not a command of actor type {kind.spec.name!r}"
            )
        if message_id is not None:
            check_text(message_id, "message id")
        with self._using():
            cell = self._cell(actor, kind)
            try:
                async with cell.lock:
                    return await self._process(cell, command, message_id, valid)
            finally:
                self._release(cell)

    async def state(self, actor: ActorRef, *, refresh: bool = False) -> Any:
        """The best known current state: the head snapshot plus the events since.

        ``refresh`` reloads from the store, to see what other writers wrote.
        """
        kind = self._kind(actor)
        with self._using():
            cell = self._cell(actor, kind)
            try:
                async with cell.lock:
                    if refresh or not cell.loaded:
                        await self._load(cell)
                    return cell.state
            finally:
                self._release(cell)

    async def clock(self, actor: ActorRef) -> VectorClock:
        """The vector clock of the state ``state(actor)`` returns."""
        kind = self._kind(actor)
        with self._using():
            cell = self._cell(actor, kind)
            try:
                async with cell.lock:
                    if not cell.loaded:
                        await self._load(cell)
                    return cell.current_clock(self.writer)
            finally:
                self._release(cell)

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

    def _kind(self, actor: ActorRef) -> _Kind:
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

    def _cell(self, actor: ActorRef, kind: _Kind) -> _Cell:
        cell = self._cells.get(actor)
        if cell is None:
            cell = _Cell(actor, kind)
            self._cells[actor] = cell
        else:
            self._cells.move_to_end(actor)
        cell.users += 1
        return cell

    def _release(self, cell: _Cell) -> None:
        cell.users -= 1
        if len(self._cells) > self.max_actors:
            self._passivate()

    def _passivate(self) -> None:
        """Drop the least recently used idle cells until the bound holds again.

        The oldest cells are nearly always idle, so this stops after a few steps.
        """
        excess = len(self._cells) - self.max_actors
        idle: list[ActorRef] = []
        for ref, cell in self._cells.items():
            if cell.users == 0 and (cell.pending is None or cell.pending.done()):
                idle.append(ref)
                if len(idle) >= excess:
                    break
        for ref in idle:
            del self._cells[ref]

    # -- loading -------------------------------------------------------------------------

    async def _load(self, cell: _Cell) -> None:
        cell.loaded = False
        if cell.pending is not None:
            await asyncio.wait([cell.pending])
            cell.pending = None
        entry = await self._cache_get(cell.ref)
        heads = await self.store.heads(cell.ref)
        if entry is not None and await self._load_cached(cell, entry, heads):
            return
        spec = cell.kind.spec
        codec = cell.kind.codec
        if len(heads) > 1:
            base = await resolve(self, cell.kind.spec, codec, heads)
            base_state = codec.decode_state(base.state)
        elif heads:
            base = heads[0]
            base_state = codec.decode_state(base.state)
        else:
            base = None
            # A fresh copy: an evolve that changes its input in place must not change the
            # initial state every other actor starts from.
            base_state = codec.decode_state(codec.encode_state(spec.initial))
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
        self._mark_dirty(cell)

    def _loaded(self, cell: _Cell, state: Any, clock: VectorClock, latest: int) -> None:
        # What decide sees must replay before what it causes, whatever the wall clocks say.
        self._ids.advance_past(latest)
        cell.state = state
        cell.clock = clock
        cell.latest = latest
        cell.own = clock.get(self.writer)
        cell.loaded = True

    async def _load_cached(
        self, cell: _Cell, entry: CacheEntry, heads: list[SnapshotRecord]
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

    async def _since(self, cell: _Cell) -> list[tuple[EventRecord, Any]]:
        """The events since the cell's base, read back after a cache hit made it skip them."""
        if cell.since is None:
            codec = cell.kind.codec
            loose = await self.store.loose_events(cell.ref, cell.base_clock)
            clock = cell.current_clock(self.writer)
            mine = sorted((r for r in loose if r.n <= clock.get(r.writer)), key=replay_order)
            cell.since = [(r, codec.decode_payload(r.type, r.version, r.payload)) for r in mine]
        return cell.since

    # -- the cache -----------------------------------------------------------------------

    async def _cache_get(self, ref: ActorRef) -> CacheEntry | None:
        cache = self.cache
        if cache is None or time.monotonic() < self._cache_retry_at:
            return None
        try:
            entry = await cache.get(ref)
        except DecodingError as exc:
            log.warning("ignoring a damaged cache entry for %s: %s", ref, exc)
            return None
        except SourceryError as exc:
            self._cache_failed(exc)
            return None
        self._cache_ok()
        if entry is not None and entry.actor != ref:
            return None
        return entry

    def _cache_failed(self, exc: BaseException) -> None:
        self._cache_retry_at = time.monotonic() + CACHE_RETRY_SECONDS
        if not self._cache_failing:
            self._cache_failing = True
            log.warning("the cache is unavailable; working from the store alone: %s", exc)

    def _cache_ok(self) -> None:
        if self._cache_failing:
            self._cache_failing = False
            log.warning("the cache is back")

    def _mark_dirty(self, cell: _Cell) -> None:
        if self.cache is None:
            return
        self._dirty[cell.ref] = cell
        if self._cache_task is None:
            self._cache_task = asyncio.create_task(self._write_cache())

    async def _write_cache(self) -> None:
        """Write behind: entries go to the cache after the commands, never on their path."""
        cache = self.cache
        assert cache is not None
        try:
            while self._dirty:
                if not self._closed:
                    await asyncio.sleep(CACHE_WRITE_DELAY)
                dirty, self._dirty = self._dirty, {}
                if time.monotonic() < self._cache_retry_at:
                    continue
                for cell in dirty.values():
                    if not cell.loaded:
                        continue
                    try:
                        state = cell.kind.codec.encode_state(cell.state)
                    except EncodingError:
                        continue  # too large or not encodable: this actor is not cached
                    try:
                        entry = CacheEntry(
                            actor=cell.ref,
                            heads=(cell.base.clock,) if cell.base is not None else (),
                            clock=cell.current_clock(self.writer),
                            state=state,
                            latest=cell.latest,
                        )
                        await cache.put(entry)
                    except SourceryError as exc:
                        self._cache_failed(exc)
                        break
                    self._cache_ok()
        finally:
            self._cache_task = None

    # -- processing ----------------------------------------------------------------------

    async def _process(
        self,
        cell: _Cell,
        command: object,
        message_id: str | None,
        valid: Callable[[], bool] | None = None,
    ) -> Outcome[Any, Any]:
        if valid is not None and not valid():
            raise Abandoned(f"command to {cell.ref} withdrawn before its turn")
        if not cell.loaded:
            await self._load(cell)
        ref = cell.ref
        kind = cell.kind
        spec = kind.spec
        codec = kind.codec
        messages: list[MessageRecord] = []
        given = message_id is not None
        if message_id is not None:
            seen = await self.store.message(ref, message_id)
            if seen is not None:
                earlier = await self.store.events(ref, seen.dots)
                return Outcome(
                    actor=ref,
                    events=tuple(codec.decode_event(r, ref) for r in earlier),
                    state=cell.state,
                    duplicate=True,
                )
        else:
            message_id = _message_id(self._ids.new())

        try:
            payloads = spec.decide(cell.state, command)
        except Rejected:
            raise
        except Exception as exc:
            cell.loaded = False  # in case it changed the state in place before failing
            raise HandlerError(f"decide failed on {ref} for {command!r}: {exc!r}") from exc
        if isinstance(payloads, (str, bytes)) or not isinstance(payloads, Sequence):
            raise HandlerError(
                f"decide must return a sequence of events, got {type(payloads).__name__}"
            )

        writer = self.writer
        n = cell.own
        records: list[EventRecord] = []
        events: list[Event[Any]] = []
        for payload in payloads:
            named = codec.event_type(payload)
            if named is None:
                raise HandlerError(
                    f"decide returned {type(payload).__name__}, not an event type of {spec.name!r}"
                )
            name, version = named
            data = codec.encode_payload(payload)
            event_id = self._ids.new()
            timestamp = event_id >> 64
            n += 1
            records.append(
                EventRecord(
                    ref.type,
                    ref.id,
                    writer,
                    n,
                    id_to_bytes(event_id),
                    timestamp,
                    message_id,
                    name,
                    version,
                    data,
                )
            )
            events.append(
                Event(event_id, ref, timestamp, message_id, writer, n, name, version, payload)
            )

        # Ids only grow and loading moved them past every loaded event, so these events
        # replay after everything the state holds: applying them now is replay order.
        due = cell.since_count + len(records) >= spec.snapshot_every
        since = await self._since(cell) if due else cell.since
        new_since = (
            None
            if since is None
            else since + [(r, e.payload) for r, e in zip(records, events, strict=True)]
        )
        try:
            state = fold(spec.evolve, cell.state, (e.payload for e in events))
        except Exception as exc:
            # evolve may have changed the state in place before failing: reload it.
            cell.loaded = False
            raise HandlerError(f"evolve failed on {ref}: {exc!r}") from exc
        batch = CommitBatch(events=records)
        if given:
            messages.append(
                MessageRecord(
                    actor=ref, message_id=message_id, dots=tuple((writer, r.n) for r in records)
                )
            )
            batch.messages = messages
        snapshot: SnapshotRecord | None = None
        if due and new_since is not None:
            clock = cell.clock.with_entry(writer, n) if n else cell.clock
            snapshot = SnapshotRecord(
                actor=ref,
                clock=clock,
                parents=(cell.base_clock,) if cell.base is not None else (),
                state=codec.encode_state(state),
                timestamp=max(cell.base.timestamp if cell.base else 0, new_since[-1][0].timestamp),
            )
            pack = PackRecord(actor=ref, clock=clock, events=tuple(r for r, _ in new_since))
            batch.snapshots.append((snapshot, pack))

        if valid is not None and not valid():
            cell.loaded = False  # decide or evolve may have changed the state in place
            raise Abandoned(f"command to {cell.ref} withdrawn before its write")
        if records or batch.messages or batch.snapshots:
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
        if snapshot is not None:
            cell.base = snapshot
            cell.base_clock = snapshot.clock
            cell.clock = snapshot.clock
            cell.since = []
            cell.since_count = 0
        else:
            cell.since = new_since
            cell.since_count += len(records)
        if records:
            cell.latest = max(cell.latest, records[-1].timestamp)
        cell.state = state
        cell.own = n
        if records:
            self._mark_dirty(cell)
        return Outcome(actor=ref, events=tuple(events), state=state)


def _message_id(value: int) -> str:
    """Ids the runtime makes up for messages that came without one (never deduplicated)."""
    return f"~{value:032x}"


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


class _Opening:
    """What ``Runtime.open`` returns: await it, or use it with ``async with``."""

    def __init__(
        self,
        cls: type[Runtime],
        url: str,
        actor_types: list[ActorType[Any, Any, Any]],
        options: dict[str, Any],
    ) -> None:
        self._cls = cls
        self._url = url
        self._actor_types = actor_types
        self._options = options
        self._runtime: Runtime | None = None

    async def _open(self) -> Runtime:
        options = dict(self._options)
        url = cache_url(options.pop("cache", None))
        store = await open_store(self._url)
        cache: Cache | None = None
        try:
            cache = await open_cache(url) if url else None
            runtime = self._cls(
                store,
                self._actor_types,
                owns_store=True,
                cache=cache,
                owns_cache=True,
                **options,
            )
            await store.register_writer(runtime.writer)
        except BaseException:
            if cache is not None:
                await cache.aclose()
            await store.aclose()
            raise
        return runtime

    def __await__(self) -> Generator[Any, None, Runtime]:
        return self._open().__await__()

    async def __aenter__(self) -> Runtime:
        self._runtime = await self._open()
        return self._runtime

    async def __aexit__(self, *exc: object) -> None:
        if self._runtime is not None:
            await self._runtime.aclose()

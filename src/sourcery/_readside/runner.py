"""Running a projection: follow the store's feed, commit each batch with its position.

A batch is a page of the feed. Its handlers run in one transaction on the projection's
database, which first moves the projection's position from where this runner read it to
the page's last event: the writes and the position commit together or not at all, so a
``kill -9`` at any moment neither skips nor repeats an event's effect.

A handler that raises rolls the batch back. The events before the failing one are then
committed on their own, and the failing one is tried again with backoff; after
``max_failures`` attempts the projection parks at it, with the event and the error in its
row, until ``skip`` moves past it or a restart (with fixed code) tries it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from sourcery._core.errors import ConfigurationError, SourceryError, StoreUnavailable
from sourcery._core.ids import id_from_bytes
from sourcery._core.records import Cursor, EventRecord
from sourcery._engine.runtime import Runtime
from sourcery._io.driver_errors import describe
from sourcery._readside import batches, reactions, tracking
from sourcery._readside.admin import describe_status
from sourcery._readside.batches import Page
from sourcery._readside.projection import Projection
from sourcery._readside.reactions import ProcessManager
from sourcery._readside.target import Target, open_target
from sourcery._readside.tracking import ProjectionStatus, Tracked
from sourcery._stores import Store, open_store

__all__ = ["ProjectionParked", "ProjectionRunner"]

log = logging.getLogger(__name__)


class ProjectionParked(SourceryError):
    """A projection stopped at an event whose handler kept failing (see its status)."""


class ProjectionRunner:
    """Runs one projection (see ``project``) or process manager (see ``react``).

    ``target``: the database URL of its tables (default: the store's). ``batch``: events
    per transaction. ``poll``: seconds between reads once caught up. ``max_failures``:
    attempts at a failing event before parking. ``backoff``: seconds before the first
    retry, doubled each time (at most 30).
    """

    def __init__(
        self,
        store: str | Store,
        projection: Projection | ProcessManager,
        *,
        target: str | None = None,
        runtime: Runtime | None = None,
        batch: int = 500,
        poll: float = 0.1,
        max_failures: int = 5,
        backoff: float = 0.2,
    ) -> None:
        if target is None and not isinstance(store, str):
            raise ConfigurationError("give the target URL when the store is an open store")
        if batch < 1 or max_failures < 1 or poll <= 0 or backoff < 0:
            raise ConfigurationError("batch and max_failures are at least 1, poll above 0")
        if isinstance(projection, ProcessManager) and runtime is None:
            raise ConfigurationError("a process manager sends through a runtime: use react()")
        self.projection = projection
        self._runtime = runtime
        self.batch = batch
        self.poll = poll
        self.max_failures = max_failures
        self.backoff = backoff
        self._store_url = store if isinstance(store, str) else None
        self._store: Store | None = None if isinstance(store, str) else store
        self._target_url: str = target if target is not None else str(store)
        self._target: Target | None = None
        self._tracked: Tracked | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> ProjectionRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open, create the tables (setup handlers) and the position, start the task."""
        if self._task is not None:
            return
        try:
            if self._store is None and self._store_url is not None:
                self._store = await open_store(self._store_url)
            self._target = await open_target(self._target_url)
            async with self._target.transaction() as tx:
                for setup in self.projection.setups:
                    await setup(tx)
                await tracking.ensure(tx, self.projection.name)
                await tracking.unpark(tx, self.projection.name)
            await self._reload()
        except BaseException:
            await self.aclose()
            raise
        self._task = asyncio.create_task(self._loop(), name=f"projection {self.projection.name}")

    async def run(self) -> None:
        """Start, then run until cancelled (what a projection process does)."""
        await self.start()
        assert self._task is not None
        await self._task

    async def aclose(self) -> None:
        """Stop the task, release the database and the store it opened. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._settle(ProjectionParked(f"projection {self.projection.name!r} was closed"))
        target, self._target = self._target, None
        if target is not None:
            await target.aclose()
        if self._store_url is not None and self._store is not None:
            store, self._store = self._store, None
            await store.aclose()

    # -- what users ask ---------------------------------------------------------------------

    async def caught_up(self, timeout: float | None = None) -> None:
        """Wait until every event stored before this call is projected.

        Raises :class:`ProjectionParked` if the projection parks (or is parked)."""
        self._check()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await asyncio.wait_for(waiter, timeout)

    async def status(self, lag_bound: int = 100_000) -> ProjectionStatus:
        """Position, lag, state and the last failure, as committed."""
        assert self._store is not None
        return await describe_status(self._store, self.projection.name, self._now(), lag_bound)

    async def skip(self, event_id: int) -> None:
        """Move a parked projection past the event it is parked at: deliberately lose that
        event's effect. Refused unless the projection is parked at ``event_id``."""
        assert self._target is not None
        async with self._target.transaction() as tx:
            done = await tracking.skip(tx, self.projection.name, event_id)
        await self._reload()
        if not done:
            raise ConfigurationError(
                f"projection {self.projection.name!r} is not parked at event {event_id}"
            )
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------

    def _now(self) -> Tracked:
        if self._tracked is None:
            raise ConfigurationError("the projection is not started")
        return self._tracked

    def _check(self) -> None:
        task = self._task
        if task is None:
            raise ConfigurationError("the projection is not running")
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        if self._now().state == "parked":
            raise self._parked_error()

    def _parked_error(self) -> ProjectionParked:
        t = self._now()
        return ProjectionParked(
            f"projection {self.projection.name!r} is parked at event {t.failed_event}"
            f" after {t.failures} failures: {t.error}"
        )

    def _settle(self, error: BaseException | None, waiters: list[Any] | None = None) -> None:
        chosen = self._waiters if waiters is None else waiters
        for waiter in chosen:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        if waiters is None:
            self._waiters = []

    async def _reload(self) -> None:
        assert self._target is not None
        async with self._target.transaction() as tx:
            self._tracked = await tracking.load(tx, self.projection.name)
        if self._tracked is None:
            raise ConfigurationError(f"projection {self.projection.name!r} has no row")

    async def _loop(self) -> None:
        try:
            while True:
                try:
                    await self._step()
                except StoreUnavailable as exc:
                    log.warning("projection %s: %s; retrying", self.projection.name, exc)
                    await asyncio.sleep(max(self.backoff, 0.05))
                    await self._reopen()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("projection %s stopped", self.projection.name)
            self._settle(exc)
            raise

    async def _reopen(self) -> None:
        if self._target is not None:
            await self._target.aclose()
        self._target = await open_target(self._target_url)
        await self._reload()

    async def _step(self) -> None:
        assert self._store is not None
        if self._now().state == "parked":
            self._settle(self._parked_error())
            await self._nap(self.poll * 5)  # until a skip here, or another process's
            await self._reload()
            return
        waiters, self._waiters = self._waiters, []
        page = await self._store.read_events(self._now().position, self.batch)
        if not page:
            if await self._follow_snapshots():
                self._waiters[:0] = waiters
                return
            self._settle(None, waiters)
            await self._nap(self.poll)
            return
        self._waiters[:0] = waiters
        await self._handle(page)

    async def _follow_snapshots(self) -> bool:
        """For a state projection caught up with the events: the snapshots since. True if
        there were any (so it is not caught up yet)."""
        p = self.projection
        if not isinstance(p, Projection) or not p.state_handlers:
            return False
        assert self._store is not None and self._target is not None
        tracked = self._now()
        try:
            new = await batches.follow_snapshots(
                p, self._store, self._target, tracked.position, tracked.snapshots, self.batch
            )
        except batches.Moved:
            await self._reload()
            return True
        except batches.Failed as failed:
            log.warning("projection %s: a state after a snapshot: %r", p.name, failed.error)
            await asyncio.sleep(min(max(self.backoff, 0.05) * 4, 30.0))
            return True
        if new is None:
            return False
        self._tracked = replace(tracked, snapshots=new)
        return True

    async def _nap(self, seconds: float) -> None:
        """Sleep, or less if woken (by a skip)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _handle(self, page: Page) -> None:
        end = len(page)
        while end:
            try:
                await self._commit(page[:end])
                return
            except batches.Moved:
                log.info("projection %s moved under this runner", self.projection.name)
                await self._reload()
                return
            except batches.Failed as failed:
                if failed.index == 0:
                    await self._failed(page[0], failed.error)
                    return
                end = failed.index

    async def _commit(self, page: Page) -> None:
        assert self._store is not None and self._target is not None
        tracked = self._now()
        if isinstance(self.projection, ProcessManager):
            assert self._runtime is not None
            await reactions.apply(
                self.projection, self._runtime, self._target, tracked.position, page
            )
        else:
            await batches.apply(self.projection, self._store, self._target, tracked.position, page)
        self._tracked = replace(
            tracked,
            position=page[-1][0],
            events=tracked.events + len(page),
            state="running",
            failures=0,
            error="",
            failed_event="",
        )

    async def _failed(self, item: tuple[Cursor, EventRecord], error: BaseException) -> None:
        cursor, record = item
        tracked = self._now()
        failures = tracked.failures + 1
        park = failures >= self.max_failures
        event_id = id_from_bytes(record.id)
        text = describe(error)
        log.warning(
            "projection %s: event %s of %s failed (%d/%d): %s",
            self.projection.name, event_id, record.actor, failures, self.max_failures, text,
        )  # fmt: skip
        assert self._target is not None
        async with self._target.transaction() as tx:
            await tracking.fail(
                tx, self.projection.name, tracked.position, (cursor, event_id), failures, text,
                park=park,
            )  # fmt: skip
        await self._reload()
        if not park:
            await asyncio.sleep(min(self.backoff * 2 ** (failures - 1), 30.0))

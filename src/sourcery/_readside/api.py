"""Starting a projection or a process manager: the two calls users make."""

from __future__ import annotations

from typing import TypedDict, Unpack

from sourcery._engine.runtime import Runtime
from sourcery._readside.projection import Projection
from sourcery._readside.reactions import ProcessManager
from sourcery._readside.runner import ProjectionRunner
from sourcery._stores import Store

__all__ = ["RunOptions", "project", "react"]


class RunOptions(TypedDict, total=False):
    """How a projection runs: see :class:`ProjectionRunner`."""

    batch: int
    poll: float
    max_failures: int
    backoff: float


def project(
    store: str | Store,
    projection: Projection,
    *,
    target: str | None = None,
    **options: Unpack[RunOptions],
) -> ProjectionRunner:
    """Run ``projection`` on the events of ``store`` (a URL, or an open store such as
    ``runtime.store``) into ``target`` (a database URL; default: the store's own).

    Use as ``async with project(...) as running``: it runs as a task until the block ends.
    ``await running.caught_up()`` waits until everything stored before the call is
    projected; ``await running.status()`` tells where it stands.
    """
    return ProjectionRunner(store, projection, target=target, **options)


def react(
    runtime: Runtime, manager: ProcessManager, *, target: str, **options: Unpack[RunOptions]
) -> ProjectionRunner:
    """Run the process manager ``manager`` on the events of ``runtime``'s store, sending
    its commands through ``runtime``; its position is kept in the ``target`` database (the
    store's own URL will do). Use as :func:`project`."""
    return ProjectionRunner(runtime.store, manager, target=target, runtime=runtime, **options)

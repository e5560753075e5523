"""One helper that makes ``X.open(...)`` usable both with ``await`` and ``async with``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Closable", "Opening"]


class Closable(Protocol):
    async def aclose(self) -> None: ...


R = TypeVar("R", bound=Closable)


class Opening(Generic[R]):
    """What an ``open`` classmethod returns: ``await`` it for the resource, or enter it with
    ``async with`` to have the resource closed on the way out (as asyncpg's pool does)."""

    __slots__ = ("_factory", "_resource")

    def __init__(self, factory: Callable[[], Awaitable[R]]) -> None:
        self._factory = factory
        self._resource: R | None = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._open().__await__()

    async def _open(self) -> R:
        return await self._factory()

    async def __aenter__(self) -> R:
        self._resource = await self._factory()
        return self._resource

    async def __aexit__(self, *exc: object) -> None:
        if self._resource is not None:
            await self._resource.aclose()

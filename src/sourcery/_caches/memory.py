"""An in-process cache: the least recently used entries go first, bounded by their number.

URL: ``memory://`` or ``memory://?max_entries=10000``.

Entries are kept encoded, as Redis keeps them: every ``get`` decodes a fresh copy, and a
damaged entry is refused by its checksum here exactly as it would be there.
"""

from __future__ import annotations

from collections import OrderedDict
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

from sourcery._caches.base import CacheEntry
from sourcery._core.config import redact
from sourcery._core.errors import ClosedError, ConfigurationError, DecodingError
from sourcery._core.records import ActorRef

__all__ = ["DEFAULT_MAX_ENTRIES", "MemoryCache"]

DEFAULT_MAX_ENTRIES = 10_000


class MemoryCache:
    """A :class:`~sourcery._caches.base.Cache` in this process's memory."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive int, got {max_entries!r}")
        self.max_entries = max_entries
        self._raw: OrderedDict[ActorRef, bytes] = OrderedDict()
        """The encoded entries, least recently used first.

        Tests may reach in to damage an entry's bytes, as a broken disk or a buggy writer
        would; nothing else should touch it.
        """
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryCache:
        """Open the cache ``memory://[?max_entries=N]`` names."""
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"not a memory cache URL: {redact(url)!r}")
        if parts.netloc or parts.path not in ("", "/") or parts.fragment:
            raise ConfigurationError(
                f"a memory cache URL names no host or path: {redact(url)!r}; use memory://"
            )
        max_entries = DEFAULT_MAX_ENTRIES
        seen: set[str] = set()
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in seen:
                raise ConfigurationError(f"memory cache URL parameter {key!r} given twice")
            seen.add(key)
            if key == "max_entries":
                try:
                    max_entries = int(value)
                except ValueError:
                    raise ConfigurationError(
                        f"max_entries must be a positive int, got {value!r}"
                    ) from None
            else:
                raise ConfigurationError(
                    f"unknown memory cache URL parameter {key!r} in {redact(url)!r}"
                )
        return cls(max_entries=max_entries)

    def __len__(self) -> int:
        return len(self._raw)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the memory cache is closed")

    async def get(self, actor: ActorRef) -> CacheEntry | None:
        self._check_open()
        data = self._raw.get(actor)
        if data is None:
            return None
        self._raw.move_to_end(actor)
        entry = CacheEntry.from_bytes(data)
        if entry.actor != actor:
            raise DecodingError(f"the cache entry kept for {actor} belongs to {entry.actor}")
        return entry

    async def put(self, entry: CacheEntry) -> None:
        self._check_open()
        data = entry.to_bytes()
        self._raw[entry.actor] = data
        self._raw.move_to_end(entry.actor)
        while len(self._raw) > self.max_entries:
            self._raw.popitem(last=False)

    async def delete(self, actor: ActorRef) -> None:
        self._check_open()
        self._raw.pop(actor, None)

    async def aclose(self) -> None:
        """Drop every entry. Idempotent."""
        self._closed = True
        self._raw.clear()

    async def __aenter__(self) -> MemoryCache:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._raw)}/{self.max_entries} entries"
        return f"<MemoryCache {state}>"

"""Caches of actor states, chosen by URL: ``memory://`` (in-process) or ``redis://``."""

from __future__ import annotations

from urllib.parse import urlsplit

from sourcery._caches.base import Cache, CacheEntry
from sourcery._core.config import redact
from sourcery._core.errors import ConfigurationError

__all__ = ["Cache", "CacheEntry", "open_cache"]


async def open_cache(url: str) -> Cache:
    """Open the cache a URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from sourcery._caches.memory import MemoryCache

        return MemoryCache.from_url(url)
    if scheme in ("redis", "rediss"):
        try:
            from sourcery._caches.redis import RedisCache
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "the Redis cache needs redis-py: pip install 'sourcery[redis]'"
            ) from exc
        return await RedisCache.open(url)
    raise ConfigurationError(f"no cache for URL scheme {scheme!r} in {redact(url)!r}")

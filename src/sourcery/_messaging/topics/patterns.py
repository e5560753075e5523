"""Topic patterns, with the semantics of an AMQP topic exchange, as pure functions.

The in-process bus matches with these, and RabbitMQ matches with its own; one property
test holds the two definitions to the same answers. A routing key is words joined by
``.``; in a pattern ``*`` stands for exactly one word and ``#`` for zero or more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from sourcery._core.errors import ConfigurationError

__all__ = ["MAX_KEY_BYTES", "check_pattern", "matches", "matches_any"]

MAX_KEY_BYTES = 255
"""Longest routing key or pattern AMQP carries, in UTF-8 bytes."""


def check_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid binding pattern, else raise ConfigurationError.

    Stricter than RabbitMQ, which takes ``a*`` as a literal word: a wildcard must be a whole
    word here, so that a pattern never means something else than it looks like.
    """
    if not isinstance(pattern, str):
        raise ConfigurationError(f"a topic pattern must be a str, not {type(pattern).__name__}")
    if not pattern:
        raise ConfigurationError("a topic pattern must not be empty; '#' matches everything")
    if len(pattern.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ConfigurationError(f"topic pattern longer than {MAX_KEY_BYTES} bytes: {pattern!r}")
    for word in pattern.split("."):
        if not word:
            raise ConfigurationError(f"topic pattern {pattern!r} has an empty word")
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise ConfigurationError(
                f"in topic pattern {pattern!r}, '*' and '#' must be whole words, not {word!r}"
            )
    return pattern


@lru_cache(maxsize=1024)
def _words(pattern: str) -> tuple[str, ...]:
    return tuple(check_pattern(pattern).split("."))


def matches(pattern: str, key: str) -> bool:
    """Whether a routing key matches a (valid) pattern."""
    return _match(_words(pattern), tuple(key.split(".")))


def matches_any(patterns: Iterable[str], key: str) -> bool:
    words = tuple(key.split("."))
    return any(_match(_words(p), words) for p in patterns)


def _match(pattern: Sequence[str], key: Sequence[str]) -> bool:
    # reachable[j]: the pattern words read so far can match the first j key words.
    reachable = [True] + [False] * len(key)
    for word in pattern:
        if word == "#":
            # Zero or more words: once a prefix is reachable, every longer one is.
            for j in range(1, len(key) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(key), 0, -1):
                reachable[j] = reachable[j - 1] and (word == "*" or word == key[j - 1])
            reachable[0] = False
    return reachable[len(key)]

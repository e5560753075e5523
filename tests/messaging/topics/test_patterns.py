"""Topic patterns against a reference definition (a regular expression built word by word)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sourcery._core.errors import ConfigurationError
from sourcery._messaging.topics.patterns import check_pattern, matches, matches_any

words = st.sampled_from(["a", "b", "c", "Deposited", "x-1"])
keys = st.lists(words, min_size=1, max_size=6).map(".".join)
patterns = st.lists(st.one_of(words, st.just("*"), st.just("#")), min_size=1, max_size=6).map(
    ".".join
)


def reference(pattern: str, key: str) -> bool:
    """AMQP topic matching, as RabbitMQ documents it, spelt as a regex over '.word' runs."""
    parts = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:\.[^.]+)*")
        elif word == "*":
            parts.append(r"\.[^.]+")
        else:
            parts.append(r"\." + re.escape(word))
    return re.fullmatch("".join(parts), "." + key) is not None


@given(patterns, keys)
def test_matches_agrees_with_the_reference(pattern: str, key: str) -> None:
    assert matches(pattern, key) == reference(pattern, key)


@given(keys)
def test_a_key_matches_itself_and_hash(key: str) -> None:
    assert matches(key, key)
    assert matches("#", key)
    assert matches(".".join("*" for _ in key.split(".")), key)
    assert not matches(".".join("*" for _ in key.split(".")) + ".*", key)


@given(st.lists(patterns, min_size=1, max_size=4), keys)
def test_matches_any_is_any_of_matches(many: list[str], key: str) -> None:
    assert matches_any(many, key) == any(matches(p, key) for p in many)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("account.*", "account.Deposited", True),
        ("account.*", "account", False),
        ("account.*", "account.a.b", False),
        ("account.#", "account", True),
        ("#.Deposited", "Deposited", True),
        ("*.#.*", "a", False),
        ("*.#.*", "a.b", True),
        ("#.#", "a", True),
        ("a.#.b.#.c", "a.b.b.c", True),
        ("a.#.b.#.c", "a.c.b", False),
    ],
)
def test_examples(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


@pytest.mark.parametrize("bad", ["", ".", "a.", ".a", "a..b", "a*", "*a", "a#", "#.a#", 7, None])
def test_invalid_patterns_raise_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        check_pattern(bad)


def test_a_pattern_of_255_bytes_is_the_limit() -> None:
    assert check_pattern("a" * 255) == "a" * 255
    with pytest.raises(ConfigurationError):
        check_pattern("\u00e9" * 128)

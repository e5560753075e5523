"""Broker URLs: Sourcery's own parameters are taken out and checked; the rest pass through."""

from __future__ import annotations

import pytest

from sourcery._core.config import AmqpSettings, broker_url, parse_amqp_url
from sourcery._core.errors import ConfigurationError


def test_defaults_and_names() -> None:
    s = parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/")
    assert s == AmqpSettings(url="amqp://guest:guest@127.0.0.1:5672/")
    assert (s.queues, s.attempts, s.prefetch, s.single_active) == (16, 5, 256, True)
    assert (s.share, s.share_interval) == (True, 1.0)
    assert s.lease_queue(3) == "sourcery.lease.3"
    assert s.workers_exchange == "sourcery.workers"
    assert s.command_queue(3) == "sourcery.commands.3"
    assert s.dead_letter_queue == "sourcery.dead"
    assert s.events_exchange == "sourcery.events"


def test_own_parameters_are_removed_and_others_kept() -> None:
    s = parse_amqp_url(
        "amqps://u:p@h:5671/vh?prefix=shop.eu&queues=4&heartbeat=30&attempts=2&prefetch=10"
        "&single_active=0"
    )
    assert s.url == "amqps://u:p@h:5671/vh?heartbeat=30"
    assert (s.prefix, s.queues, s.attempts, s.prefetch, s.single_active) == (
        "shop.eu",
        4,
        2,
        10,
        False,
    )
    assert s.command_queue(0) == "shop.eu.commands.0"


@pytest.mark.parametrize(
    "query",
    [
        "queues=0",
        "queues=1025",
        "queues=many",
        "attempts=0",
        "prefetch=-1",
        "prefix=",
        "prefix=a b",
        "prefix=x/y",
        "prefix=x;DROP",
        "single_active=maybe",
        "queues=2&queues=3",
        "share=yes",
        "share=1&single_active=0",
        "share_interval=0",
        "share_interval=61",
        "share_interval=soon",
        "share_interval=nan",
    ],
)
def test_bad_parameters_are_refused(query: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_amqp_url(f"amqp://127.0.0.1/?{query}")


def test_unknown_parameters_are_refused_and_the_clients_own_passed_on() -> None:
    with pytest.raises(ConfigurationError, match="unknown amqp URL parameter 'bogus'"):
        parse_amqp_url("amqp://h/?prefix=x&bogus=1")
    with pytest.raises(ConfigurationError, match="connection_timeout"):
        parse_amqp_url("amqp://h/?connection_timeout=5")  # aiormq's is called timeout
    s = parse_amqp_url("amqp://h/?prefix=x&heartbeat=5&timeout=3&name=w1&no_verify_ssl=1")
    assert s.prefix == "x"
    assert s.url == "amqp://h/?heartbeat=5&timeout=3&name=w1&no_verify_ssl=1"


def test_sharing_can_be_turned_off_and_its_interval_set() -> None:
    s = parse_amqp_url("amqp://h/?share=0&share_interval=0.25&heartbeat=5")
    assert (s.share, s.share_interval, s.single_active) == (False, 0.25, True)
    assert s.url == "amqp://h/?heartbeat=5"
    # Without a single active consumer (isolation broken on purpose) there is no sharing.
    assert not parse_amqp_url("amqp://h/?single_active=0").share
    assert parse_amqp_url("amqp://h/?share=true").share


@pytest.mark.parametrize("url", ["redis://127.0.0.1", "http://x", "127.0.0.1:5672"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not an amqp URL"):
        parse_amqp_url(url)


def test_the_password_is_not_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_amqp_url("http://user:s3cret@host/")
    assert "s3cret" not in str(info.value)


def test_broker_url_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCERY_BROKER", raising=False)
    assert broker_url(None) is None
    monkeypatch.setenv("SOURCERY_BROKER", "amqp://env/")
    assert broker_url(None) == "amqp://env/"
    assert broker_url("amqp://arg/") == "amqp://arg/"

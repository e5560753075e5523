"""Sourcery: event-sourced actors that stay available under partitions and concurrent writers.

Define an :class:`ActorType` (initial state, ``decide``, ``evolve``), open a
:class:`Runtime` on a store URL, and ``send`` it commands.
"""

from __future__ import annotations

from .actor import ActorType, Branch, Event, Outcome, Upcaster
from .apps import load_app
from .client import Client
from .clock import Order, VectorClock
from .errors import (
    Abandoned,
    BrokerError,
    BrokerUnavailable,
    ClosedError,
    CommandError,
    CommandFailed,
    CommandTimeout,
    ConfigurationError,
    DecodingError,
    EncodingError,
    HandlerError,
    InvalidActorRef,
    PayloadTooLarge,
    Rejected,
    SchemaVersionError,
    SourceryError,
    StoreError,
    StoreUnavailable,
    UnknownActorType,
    UnknownCommand,
    UnknownEventType,
)
from .publishing import Publisher
from .queues import CommandQueue, DeadLetter, open_queue
from .records import ActorRef
from .runtime import Runtime
from .stores import Store, open_store
from .subscriptions import CatchUpSubscription, subscribe
from .topics import EventBus, MemoryBus, Subscription, open_bus
from .wire import Reply
from .worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "Abandoned",
    "ActorRef",
    "ActorType",
    "Branch",
    "BrokerError",
    "BrokerUnavailable",
    "CatchUpSubscription",
    "Client",
    "ClosedError",
    "CommandError",
    "CommandFailed",
    "CommandQueue",
    "CommandTimeout",
    "ConfigurationError",
    "DeadLetter",
    "DecodingError",
    "EncodingError",
    "Event",
    "EventBus",
    "HandlerError",
    "InvalidActorRef",
    "MemoryBus",
    "Order",
    "Outcome",
    "PayloadTooLarge",
    "Publisher",
    "Rejected",
    "Reply",
    "Runtime",
    "SchemaVersionError",
    "SourceryError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Subscription",
    "UnknownActorType",
    "UnknownCommand",
    "UnknownEventType",
    "Upcaster",
    "VectorClock",
    "Worker",
    "WorkerStats",
    "__version__",
    "load_app",
    "open_bus",
    "open_queue",
    "open_store",
    "subscribe",
]

"""Sourcery: event-sourced actors that stay available under partitions and concurrent writers.

Define an :class:`ActorType` (initial state, ``decide``, ``evolve``), open a
:class:`Runtime` on a store URL, and ``send`` it commands.
"""

from __future__ import annotations

from .actor import ActorType, Branch, Event, Outcome, Upcaster
from .clock import Order, VectorClock
from .errors import (
    ClosedError,
    CommandError,
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
from .records import ActorRef
from .runtime import Runtime
from .stores import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "ActorRef",
    "ActorType",
    "Branch",
    "ClosedError",
    "CommandError",
    "ConfigurationError",
    "DecodingError",
    "EncodingError",
    "Event",
    "HandlerError",
    "InvalidActorRef",
    "Order",
    "Outcome",
    "PayloadTooLarge",
    "Rejected",
    "Runtime",
    "SchemaVersionError",
    "SourceryError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnknownActorType",
    "UnknownCommand",
    "UnknownEventType",
    "Upcaster",
    "VectorClock",
    "__version__",
    "open_store",
]

"""Sourcery: event-sourced actors that stay available under partitions and concurrent writers.

Define an :class:`ActorType` (initial state, ``decide``, ``evolve``), open a
:class:`Runtime` on a store URL, and ``send`` it commands.
"""

from __future__ import annotations

from sourcery._apps.loader import load_app
from sourcery._core.actor import ActorType, Branch, Event, Outcome, Upcaster
from sourcery._core.clock import Order, VectorClock
from sourcery._core.errors import (
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
from sourcery._core.records import ActorRef
from sourcery._core.version import __version__
from sourcery._engine.runtime import Runtime
from sourcery._messaging.client import Client
from sourcery._messaging.publishing import Publisher
from sourcery._messaging.queues import CommandQueue, DeadLetter, open_queue
from sourcery._messaging.subscriptions import CatchUpSubscription, subscribe
from sourcery._messaging.topics import EventBus, MemoryBus, Subscription, open_bus
from sourcery._messaging.wire import Reply
from sourcery._messaging.worker import Worker, WorkerStats
from sourcery._readside.api import project, react
from sourcery._readside.projection import Projection
from sourcery._readside.reactions import ProcessManager
from sourcery._readside.runner import ProjectionParked, ProjectionRunner
from sourcery._readside.target import ProjectionTransaction
from sourcery._readside.tracking import ProjectionStatus
from sourcery._stores import Store, open_store

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
    "ProcessManager",
    "Projection",
    "ProjectionParked",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionTransaction",
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
    "project",
    "react",
    "subscribe",
]

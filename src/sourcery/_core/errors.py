"""The one error tree of Sourcery.

Every error the library raises derives from :class:`SourceryError`; where a builtin
means the same thing it is a second base, so generic handlers keep working::

    SourceryError
    ├── ConfigurationError (ValueError)    a bad URL, option or actor-type definition
    ├── UnknownActorType (LookupError)     an actor type the runtime was not given
    ├── InvalidActorRef (ValueError)       an actor id that cannot be stored
    ├── CommandError                       a command was not applied; nothing was stored
    │   ├── UnknownCommand (TypeError)     not one of the actor type's command types
    │   ├── Rejected                       decide() refused it; subclass for your own reasons
    │   ├── HandlerError                   decide() or evolve() raised; the cause is chained
    │   ├── CommandFailed                  a worker refused or failed it; `.reply` says why
    │   └── CommandTimeout (TimeoutError)  no reply in time; the command may still be applied
    ├── EncodingError (ValueError)         a payload or state that cannot be encoded
    │   └── PayloadTooLarge                larger than the configured limit
    ├── DecodingError (ValueError)         stored or received bytes that cannot be decoded
    │   └── UnknownEventType               a stored event type that no code registers
    ├── StoreError                         the store failed; stored data is as it was
    │   ├── StoreUnavailable               the store went away (cause chained)
    │   └── SchemaVersionError             the store's schema is newer than this code
    ├── BrokerError                        the message broker failed or refused a message
    │   └── BrokerUnavailable              the broker cannot be reached (cause chained)
    └── ClosedError                        the resource was closed by us
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ClosedError",
    "CommandError",
    "CommandFailed",
    "CommandTimeout",
    "ConfigurationError",
    "DecodingError",
    "EncodingError",
    "HandlerError",
    "InvalidActorRef",
    "PayloadTooLarge",
    "Rejected",
    "SchemaVersionError",
    "SourceryError",
    "StoreError",
    "StoreUnavailable",
    "UnknownActorType",
    "UnknownCommand",
    "UnknownEventType",
]


class SourceryError(Exception):
    """Root of every error Sourcery raises."""


class ConfigurationError(SourceryError, ValueError):
    """A URL, option or definition that cannot work; raised before anything is touched."""


class UnknownActorType(SourceryError, LookupError):
    """A command or record names an actor type the runtime does not know."""


class InvalidActorRef(SourceryError, ValueError):
    """An actor type or id that is empty, too long, or not valid UTF-8."""


class CommandError(SourceryError):
    """A command was not applied. Store and actor state are unchanged."""


class UnknownCommand(CommandError, TypeError):
    """The command is not one of the types the actor type declares."""


class Rejected(CommandError):
    """decide() refused the command. Subclass it for typed business rejections."""


class HandlerError(CommandError):
    """User code (decide or evolve) raised; the original error is ``__cause__``."""


class CommandFailed(CommandError):
    """A worker rejected the command or failed on it; nothing of it was stored.

    ``reply`` is the worker's answer: ``reply.error_type`` names the exception it raised
    (a :class:`Rejected` subclass for a business refusal) and ``reply.error`` its message.
    """

    def __init__(self, message: str, reply: object = None) -> None:
        super().__init__(message)
        self.reply = reply


class Abandoned(CommandError):
    """The caller withdrew the command (its ``valid`` check failed) before it was stored."""


class CommandTimeout(CommandError, TimeoutError):
    """No reply came in time. The command was sent and may still be applied later."""


class EncodingError(SourceryError, ValueError):
    """A value cannot be encoded for storage or transport."""


class PayloadTooLarge(EncodingError):
    """An encoded payload exceeds the configured size limit."""


class DecodingError(SourceryError, ValueError):
    """Bytes from a store or a peer cannot be decoded into the expected value."""


class UnknownEventType(DecodingError):
    """A stored event's type is not registered with its actor type."""


class StoreError(SourceryError):
    """The store failed an operation; it holds what it held before the call."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or went away mid-operation; the cause is chained."""


class SchemaVersionError(StoreError):
    """The store was written by a newer schema than this code understands."""


class BrokerError(SourceryError):
    """The message broker refused a message or failed an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached or went away mid-operation; the cause is chained."""


class ClosedError(SourceryError):
    """The runtime or store was closed (by us); open a new one."""

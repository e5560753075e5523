"""``sourcery worker`` runs the commands the broker queues for some actor types on a store;
``sourcery send`` puts one command on those queues, and with ``--wait`` prints the reply.

Both load the actor types from a ``MODULE:ATTR`` name (:mod:`sourcery._apps.loader`).
The messaging layer is imported only when one of them runs, so that the other commands
start without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect
from rich.console import Console
from rich.markup import escape

from sourcery._apps.cli.common import flush, run, seconds, stop_signals
from sourcery._core.actor import ActorType
from sourcery._core.config import redact, store_url
from sourcery._core.errors import CommandFailed, ConfigurationError, DecodingError
from sourcery._core.records import ActorRef
from sourcery._messaging.wire import Reply

if TYPE_CHECKING:
    from sourcery._messaging.worker import Worker

__all__ = ["STARTUP_RETRY_MAX", "add_parsers"]

STARTUP_RETRY_MAX = 10.0
"""Seconds, at most, between two attempts to reach the broker and the store at start."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run commands from the broker on a store until interrupted (Ctrl-C or SIGTERM)",
        description=(
            "Take commands for the actor types MODULE:ATTR names from the broker's command"
            " queues and run them on the store; on SIGTERM or Ctrl-C, finish the commands"
            " under way and exit."
        ),
    )
    worker.add_argument("app", metavar="MODULE:ATTR", help="the actor type(s) to run")
    worker.add_argument(
        "--store", metavar="URL", help="default: $SOURCERY_STORE, else sqlite:///sourcery.db"
    )
    worker.add_argument("--cache", metavar="URL", help="default: $SOURCERY_CACHE (none)")
    worker.add_argument("--broker", metavar="URL", help="default: $SOURCERY_BROKER")
    worker.add_argument("--name", metavar="NAME", help="the worker's name in its writer id")
    worker.add_argument(
        "--events",
        metavar="URL",
        help="also publish committed events on this bus, e.g. the broker's URL"
        " (default: $SOURCERY_EVENTS, else none)",
    )
    worker.set_defaults(run=_worker)

    send = commands.add_parser(
        "send",
        help="send one command to an actor through the broker",
        description=(
            "Send COMMAND with the fields JSON to ACTOR (type/id), an actor type of"
            " MODULE:ATTR, e.g. sourcery send sourcery.examples.bank:accounts account/a1"
            " Deposit '{\"amount\": 5}' --wait"
        ),
    )
    send.add_argument("app", metavar="MODULE:ATTR", help="the actor type(s) to send to")
    send.add_argument("actor", metavar="TYPE/ID")
    send.add_argument("command_name", metavar="COMMAND", help="the command type's name")
    send.add_argument(
        "fields",
        metavar="JSON",
        nargs="?",
        default="{}",
        help="the command's fields as a JSON object, @FILE to read them from a file,"
        " or - to read them from stdin (default: {})",
    )
    send.add_argument("--broker", metavar="URL", help="default: $SOURCERY_BROKER")
    send.add_argument("--wait", action="store_true", help="wait for the worker's reply")
    send.add_argument(
        "--timeout",
        type=seconds,
        default=5.0,
        metavar="S",
        help="seconds to wait for the reply (default: 5)",
    )
    send.add_argument("--message-id", metavar="ID", help="default: a new id")
    send.set_defaults(run=_send)


def _broker(args: argparse.Namespace) -> str:
    from sourcery._core.config import broker_url

    url = broker_url(args.broker)
    if url is None:
        raise ConfigurationError("no broker: give its URL with --broker URL or SOURCERY_BROKER")
    return url


# -- worker ------------------------------------------------------------------------------


def _worker(args: argparse.Namespace, out: Console, err: Console) -> int:
    from sourcery._apps.loader import load_app

    types = load_app(args.app)
    return run(_working(args, types, out, err))


async def _working(
    args: argparse.Namespace, types: list[ActorType[Any, Any, Any]], out: Console, err: Console
) -> int:
    """Open the worker (waiting for its broker and store), run it until stopped."""
    broker = _broker(args)
    url = store_url(args.store)
    events = args.events or os.environ.get("SOURCERY_EVENTS") or None
    stopping = asyncio.Event()
    opened: list[Worker] = []

    def stop() -> None:
        stopping.set()
        for worker in opened:
            worker.stop()

    with stop_signals(stop):
        worker = await _open_worker(args, types, url, broker, events, stopping, err)
        if worker is None:
            out.print("stopped before the broker and the store could be reached")
            flush(out)
            return 0
        async with worker:
            opened.append(worker)
            if stopping.is_set():
                worker.stop()
            names = ", ".join(t.name for t in types)
            out.print(
                f"worker {escape(worker.runtime.writer)} running {escape(names)} on "
                f"{escape(redact(url))}, commands from {escape(redact(broker or ''))}"
                + (f", events to {escape(redact(events))}" if events else "")
            )
            flush(out)
            await worker.run()
            s = worker.stats
            out.print(
                f"stopped: {s.applied:,} applied, {s.duplicates:,} duplicates, "
                f"{s.rejected:,} rejected, {s.retried:,} retried, {s.dead:,} dead letters"
            )
            flush(out)
    return 0


async def _open_worker(
    args: argparse.Namespace,
    types: list[ActorType[Any, Any, Any]],
    url: str,
    broker: str,
    events: str | None,
    stopping: asyncio.Event,
    err: Console,
) -> Worker | None:
    """The opened worker; None if stopped before its broker and store could be reached.

    A worker started before its broker or store (a reboot, a deployment) waits for them,
    as a service manager would expect, instead of exiting.
    """
    from sourcery._core.errors import BrokerUnavailable, StoreUnavailable
    from sourcery._messaging.worker import Worker

    pause = 0.5
    while True:
        try:
            return await Worker.open(
                types, store=url, broker=broker, cache=args.cache, writer=args.name, events=events
            )
        except (BrokerUnavailable, StoreUnavailable) as exc:
            if isinstance(exc, StoreUnavailable) and url.startswith("sqlite:"):
                raise  # a local file that cannot be opened now will not open later
            err.print(f"[yellow]waiting:[/] {escape(str(exc))}; next attempt in {pause:g} s")
            flush(err)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause)
        if stopping.is_set():
            return None
        pause = min(pause * 2, STARTUP_RETRY_MAX)


# -- send --------------------------------------------------------------------------------


def _send(args: argparse.Namespace, out: Console, err: Console) -> int:
    from sourcery._apps.loader import load_app

    types = load_app(args.app)
    actor = ActorRef.parse(args.actor)
    command = _command(types, actor, args.command_name, _fields_text(args.fields))
    return run(_sending(args, actor, command, out, err))


def _command(
    types: list[ActorType[Any, Any, Any]], actor: ActorRef, name: str, fields: str
) -> object:
    """The command ``name`` of ``actor``'s type, with the fields a JSON object gives."""
    spec = next((t for t in types if t.name == actor.type), None)
    if spec is None:
        known = ", ".join(sorted(t.name for t in types))
        raise ConfigurationError(f"no actor type {actor.type!r} here (known: {known})")
    cls = next((c for c in spec.commands if c.__name__ == name), None)
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in spec.commands))
        raise ConfigurationError(f"actor type {spec.name!r} has no command {name!r} ({known})")
    shown = fields if len(fields) <= 200 else fields[:200] + "…"
    try:
        given = msgspec.json.decode(fields.encode())
        if isinstance(given, dict):
            names = {f.encode_name for f in _fields_of(cls)}
            unknown = sorted(set(given) - names)
            if unknown:
                raise DecodingError(
                    f"the command {name} has no field {', '.join(map(repr, unknown))}"
                    f" (its fields: {', '.join(sorted(names)) or 'none'})"
                )
        return msgspec.json.decode(fields.encode(), type=cls)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"cannot make the command {name} from {shown!r}: {exc}") from exc


def _fields_of(cls: type) -> tuple[msgspec.inspect.Field, ...]:
    """A command type's fields, as msgspec encodes them (none if it is not a struct)."""
    info = msgspec.inspect.type_info(cls)
    if isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
        return info.fields
    return ()


def _fields_text(arg: str) -> str:
    """The JSON a ``send`` argument gives: as written, from ``@FILE``, or from stdin (-)."""
    if arg == "-":
        return sys.stdin.read()
    if arg.startswith("@"):
        try:
            return Path(arg[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the command's JSON from {arg[1:]}: {exc}"
            ) from exc
    return arg


async def _sending(
    args: argparse.Namespace, actor: ActorRef, command: object, out: Console, err: Console
) -> int:
    from sourcery._messaging.client import Client

    async with Client.open(_broker(args)) as client:
        if not args.wait:
            message_id = await client.send(actor, command, message_id=args.message_id)
            out.print(f"sent {escape(message_id)} to {escape(str(actor))}")
            return 0
        try:
            reply = await client.request(
                actor, command, timeout=args.timeout, message_id=args.message_id
            )
        except CommandFailed as exc:
            failed = exc.reply
            if isinstance(failed, Reply):
                err.print(
                    f"[red]{failed.status}:[/red] {escape(failed.message_id)} to "
                    f"{escape(str(actor))}: {escape(failed.error_type)}: {escape(failed.error)}",
                    soft_wrap=True,
                )
                return 1
            raise
    events = ", ".join(reply.events) or "no events"
    out.print(f"{reply.status}: {escape(reply.message_id)} to {escape(str(actor))}: {events}")
    return 0

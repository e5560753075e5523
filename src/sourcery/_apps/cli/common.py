"""What every command shares: consoles, logging, error text, argument types, stop signals
and store locations (a URL, or a sqlite file path that must already be a store).

Logging is set up here and nowhere else in the package: the library only logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rich.console import Console
from rich.logging import RichHandler

from sourcery._core.config import parse_sqlite_url, redact
from sourcery._core.errors import ConfigurationError
from sourcery._stores import stored_version

__all__ = [
    "as_url",
    "console",
    "existing_store",
    "existing_stores",
    "flush",
    "label",
    "logging_to",
    "one_line",
    "positive",
    "run",
    "seconds",
    "stop_signals",
]

T = TypeVar("T")


# -- output and logging ------------------------------------------------------------------


def console(*, stderr: bool) -> Console:
    """A rich console on stdout or stderr, wide enough for tables when not a terminal."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # pipes and files get wider tables than rich's 80 columns
    return out


DRIVER_LOGGERS = ("aiormq", "aio_pika", "asyncpg", "redis")
"""The drivers' own loggers: their lines say what ours already say, in their words (an
unreachable broker logged by aiormq on every retry), so only -vv shows them."""


@contextlib.contextmanager
def logging_to(console: Console, verbose: int) -> Iterator[None]:
    """Send the library's logs to stderr through rich; -v shows info, -vv debug, and the
    drivers' own logs too (without -vv they are dropped: the error we raise says it all).

    Only for the duration of ``main``: it is undone on the way out, so that calling
    ``main`` in-process leaves logging as it found it.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console, show_path=verbose > 1, rich_tracebacks=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("sourcery")
    was = ours.level
    ours.setLevel(level)
    ours.addHandler(handler)
    drivers = [logging.getLogger(name) for name in DRIVER_LOGGERS]
    quiet = handler if verbose > 1 else logging.NullHandler()
    saved = [(d, d.propagate) for d in drivers]
    for driver in drivers:
        driver.addHandler(quiet)
        driver.propagate = False  # ours (or nothing), not also the root logger's
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(was)
        for driver, propagate in saved:
            driver.removeHandler(quiet)
            driver.propagate = propagate


def one_line(exc: BaseException) -> str:
    """An error's message on one line, or its type's name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def flush(out: Console) -> None:
    """Push out what was printed, so that a log file or a pipe sees it now."""
    with contextlib.suppress(OSError, ValueError):
        out.file.flush()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


@contextlib.contextmanager
def stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGINT or SIGTERM while inside; the default handlers come back after.

    Where signals cannot be handled (not the main thread, Windows) nothing is installed.
    """
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


# -- argument types ----------------------------------------------------------------------


def positive(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    """A finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


# -- store locations ---------------------------------------------------------------------


def as_url(text: str) -> str:
    """A URL as given; anything without a scheme is a sqlite file path."""
    if "://" in text:
        return text
    if "?" in text or "#" in text:
        raise ConfigurationError(f"a file path with '?' or '#' cannot be a sqlite URL: {text!r}")
    return "sqlite:///" + str(Path(text).resolve())


def label(text: str) -> str:
    """How a store is named in output: a path as given, a URL without its password."""
    return redact(text) if "://" in text else text


def _sqlite_path(url: str) -> Path | None:
    """The file a sqlite URL names, or None for memory and other schemes."""
    if urlsplit(url).scheme != "sqlite":
        return None
    settings = parse_sqlite_url(url)
    return None if settings.memory else Path(settings.path)


def existing_store(text: str) -> str:
    """The URL of a store that must exist already: inspecting never creates one."""
    (url,) = existing_stores(text)
    return url


def existing_stores(*texts: str) -> list[str]:
    """The URLs of stores that must all exist already; none is touched unless all do."""
    urls = [as_url(text) for text in texts]
    paths = [_sqlite_path(url) for url in urls]
    for path in paths:
        if path is not None and not path.is_file():
            raise ConfigurationError(f"no such store file: {path}")
    for url, path in zip(urls, paths, strict=True):
        if path is not None and run(stored_version(url)) == 0:
            raise ConfigurationError(f"{path} is not a sourcery store (schema version 0)")
    return urls

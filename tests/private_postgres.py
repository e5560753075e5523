"""A private, disposable PostgreSQL server for the tests that break the store.

Restarting the shared test server would break every other test that uses it. These tests
get a server of their own instead: initialised with ``initdb`` in a temporary directory,
listening on a port of its own on 127.0.0.1 and on a socket in that directory, and run as
the ``postgres`` user when the tests run as root (the server refuses to run as root). A
restart is a real crash of the server (``pg_ctl stop -m immediate``: every connection cut,
no checkpoint, crash recovery at the next start). A watchdog stops it and removes its
directory if the test process dies without its teardown (``kill -9``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from private_broker import _free_port

__all__ = ["PrivatePostgres", "postgres_missing", "private_server"]

BOOT_TIMEOUT = 60.0
"""A guard against a server that never starts, not a speed check."""
CTL_TIMEOUT = 60.0
_WATCHDOG = """
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
[ -d "$2" ] || exit 0
"$PG_CTL" -D "$2/data" -m immediate -w -t 30 stop >/dev/null 2>&1
rm -rf "$2"
"""
"""Arguments: the test process and the server's directory."""


def _bin_dir() -> Path | None:
    """The newest of Debian's ``/usr/lib/postgresql/<version>/bin`` (or ``pg_ctl`` on PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    where = found[-1] if found else shutil.which("pg_ctl")
    if where is None:
        return None
    folder = Path(where).resolve().parent
    return folder if (folder / "initdb").exists() and (folder / "postgres").exists() else None


def _run_as() -> pwd.struct_passwd | None:
    """Who runs the server: ``postgres`` when the tests run as root, else the tests' user."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def postgres_missing() -> str | None:
    """Why no private server can be started here, or None."""
    if sys.platform == "win32":
        return "a private PostgreSQL server needs a POSIX system"
    if _bin_dir() is None:
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and _run_as() is None:
        return "running as root, and there is no postgres user to run the server as"
    return None


class PrivatePostgres:
    """One disposable PostgreSQL server; :func:`private_server` starts and removes it."""

    def __init__(self, root: Path) -> None:
        folder = _bin_dir()
        if folder is None:
            raise RuntimeError(str(postgres_missing()))
        self.root = root
        self.data = root / "data"
        self.port = _free_port(set())
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0
        self._bin = folder
        self._user = _run_as()
        self._watchdog: subprocess.Popen[bytes] | None = None
        if self._user is not None:
            os.chown(root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{root}'\nmax_connections = 100\n"
                "fsync = off\nshared_buffers = 32MB\nlogging_collector = off\n"
            )

    def _run(self, tool: str, *args: str) -> str:
        def demote() -> None:
            if self._user is not None:
                os.setgid(self._user.pw_gid)
                os.setuid(self._user.pw_uid)

        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(
            [str(self._bin / tool), *args],
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            check=False,
            preexec_fn=demote if self._user is not None else None,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{done.stdout}\n{done.stderr}\n{self.log_tail()}")
        return done.stdout

    # -- the server ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server (recovering from a crash if it was killed) and wait until it
        accepts connections."""
        if self.running:
            return
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            str(int(BOOT_TIMEOUT)),
            "start",
        )
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "watchdog", str(os.getpid()), str(self.root)],
                env={**os.environ, "PG_CTL": str(self._bin / "pg_ctl")},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: a crash, as far as clients see)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self, while_down: Callable[[], object] | None = None) -> None:
        """Crash the server (every connection cut), run ``while_down()``, start it again."""
        self.stop()
        try:
            if while_down is not None:
                while_down()
        finally:
            self.start()
        self.restarts += 1

    def close(self) -> None:
        """Stop the server for good and remove its directory."""
        try:
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
                self.stop()
        finally:
            if self._watchdog is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._watchdog.kill()
                self._watchdog.wait(CTL_TIMEOUT)
                self._watchdog = None
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        log = self.root / "server.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def private_server() -> Iterator[PrivatePostgres]:
    """A started private server, stopped and removed afterwards (also on an interrupt, and
    at exit if the context is abandoned)."""
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="sourcery-postgres-")))
    atexit.register(server.close)
    try:
        server.start()
        yield server
    finally:
        server.close()
        atexit.unregister(server.close)

"""A private, disposable RabbitMQ node for the tests that break the broker.

Dropping every connection or restarting a node must never touch the shared test broker
(a fault injected there once wedged it for every other test). These tests get a node of
their own instead: its own node name, AMQP and distribution ports, data, log and
configuration files and Erlang cookie, all in a temporary directory that goes with it.
No plugin is enabled, so it starts in a few seconds. The node runs in the foreground, in
a process session of its own (so its processes are known even if it fails to boot); a
watchdog stops it if the test process dies without its teardown (``kill -9``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from services import amqp_prefix

__all__ = ["PrivateBroker", "private_node", "rabbitmq_missing"]

BOOT_TIMEOUT = 120.0
"""A guard against a node that never boots, not a speed check."""
CTL_TIMEOUT = 60.0
SCRIPTS = ("rabbitmq-server", "rabbitmqctl")
_WATCHDOG = """
while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
[ -d "$2" ] || exit 0
"$RABBITMQCTL" -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1
rm -rf "$2"
"""
"""Arguments: the test process and the node's directory; the node's environment."""


def _scripts_dir() -> Path | None:
    """Where the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts are.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that runs the scripts as the
    ``rabbitmq`` user, who could not write the node's directory: the symlink leads to the
    directory of the scripts themselves.
    """
    found = shutil.which("rabbitmq-server") or (
        "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server")
        else None
    )
    if found is None:
        return None
    where = Path(found).resolve().parent
    return where if all((where / name).exists() for name in SCRIPTS) else None


def rabbitmq_missing() -> str | None:
    """Why no private node can be started here, or None."""
    if sys.platform == "win32":
        return "a private RabbitMQ node needs a POSIX shell"
    if _scripts_dir() is None:
        return "RabbitMQ is not installed (no rabbitmq-server and rabbitmqctl on PATH)"
    return None


def _free_port(taken: set[int]) -> int:
    """A port nobody listens on, below the range the kernel hands to outgoing connections
    (one of those could take it while the node restarts) and away from RabbitMQ's own."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, min(low, 32768))
        if port in taken or 25000 <= port < 26000:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for a private RabbitMQ node")


class PrivateBroker:
    """One disposable RabbitMQ node; :func:`private_node` starts and removes it."""

    def __init__(self, root: Path) -> None:
        scripts = _scripts_dir()
        if scripts is None:
            raise RuntimeError(str(rabbitmq_missing()))
        self.root = root
        self.node = f"sourcery-test-{os.getpid()}@localhost"
        self.port = _free_port(set())
        self.dist_port = _free_port({self.port})
        self.amqp = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.restarts = 0
        self._server = str(scripts / "rabbitmq-server")
        self._ctl = str(scripts / "rabbitmqctl")
        self._proc: subprocess.Popen[bytes] | None = None
        self._booted = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._env = self._configure()

    def _configure(self) -> dict[str, str]:
        root = self.root
        (root / "rabbitmq-env.conf").write_text("")  # not the system's NODENAME and ports
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nlog.file.level = info\nlog.console = false\n"
        )
        (root / "enabled_plugins").write_text("[].\n")  # none: Sourcery needs none
        cookie = root / ".erlang.cookie"  # HOME is the node's directory: its own cookie
        cookie.write_text(os.urandom(16).hex().upper())
        cookie.chmod(0o400)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("CONF_ENV_FILE", "HOME")
        }
        env.update(
            HOME=str(root),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(root / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(root / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(root / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(root / "mnesia"),
            RABBITMQ_LOG_BASE=str(root / "log"),
            RABBITMQ_PID_FILE=str(root / "node.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    # -- the node ------------------------------------------------------------------------

    def url(self, **params: object) -> str:
        """This node's URL with Sourcery's parameters: a fresh prefix and 2 command queues
        unless ``params`` say otherwise (as :func:`services.amqp_url`)."""
        query = {"prefix": amqp_prefix(), "queues": 2, **params}
        return self.amqp + "?" + "&".join(f"{k}={v}" for k, v in query.items())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the node (the data of an earlier run is recovered) and wait until it
        accepts connections."""
        if self.running:
            return
        self._booted = False
        with (self.root / "server.out").open("ab") as out:
            self._proc = subprocess.Popen(
                [self._server],
                cwd=self.root,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "watchdog", str(os.getpid()), str(self.root)],
                env={**self._env, "RABBITMQCTL": self._ctl},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.node} did not boot:\n{self.log_tail()}")
            # Fails at once while the node is not yet registered with epmd.
            done = subprocess.run(
                [self._ctl, "-n", self.node, "-q", "await_startup", "--timeout", "10"],
                env=self._env,
                capture_output=True,
                timeout=CTL_TIMEOUT,
                check=False,
            )
            if done.returncode == 0:
                self._booted = True
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"RabbitMQ node {self.node} did not boot in {BOOT_TIMEOUT:g} s:\n"
                    f"{done.stderr.decode(errors='replace')}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node cleanly (``rabbitmqctl stop``); kill it if that fails, or if it
        was interrupted while booting."""
        if self._proc is None:
            return
        if self._proc.poll() is None and self._booted:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.ctl("stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(CTL_TIMEOUT)
        self.kill()

    def kill(self) -> None:
        """SIGKILL every process of the node that is left (it has a session of its own)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(CTL_TIMEOUT)
        self._proc = None
        self._booted = False

    def restart(self, while_down: Callable[[], object] | None = None) -> None:
        """A real restart: the node stops (every connection is closed, every process and
        queue in memory is gone; then ``while_down()`` runs) and starts again, recovering
        its quorum queues from disk."""
        self.stop()
        try:
            if while_down is not None:
                while_down()
        finally:
            self.start()
        self.restarts += 1

    def restart_app(self) -> None:
        """Stop and start RabbitMQ's application inside the running node (``rabbitmqctl
        stop_app``, ``start_app``): every connection closed, every queue stopped and
        recovered from disk, the Erlang node itself kept."""
        self.ctl("stop_app")
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", str(int(BOOT_TIMEOUT)))
        self.restarts += 1

    def close(self) -> None:
        """Stop the node for good and remove its directory."""
        try:
            self.stop()
        finally:
            if self._watchdog is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._watchdog.kill()
                self._watchdog.wait(CTL_TIMEOUT)
                self._watchdog = None
            shutil.rmtree(self.root, ignore_errors=True)

    # -- faults and inspection -----------------------------------------------------------

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n <this node> -q ARGS``; its output."""
        return subprocess.run(
            [self._ctl, "-n", self.node, "-q", *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            check=True,
        ).stdout

    def drop_connections(self) -> None:
        """The node closes every client connection at once, as a restart would."""
        self.ctl("close_all_connections", "closed by a test")

    def close_connections(self, name: str) -> int:
        """Close the connections whose client properties mention ``name`` (a connection
        name); how many there were."""
        listed = self.ctl("list_connections", "pid", "client_properties")
        pids = [line.split("\t")[0] for line in listed.splitlines() if name in line]
        for pid in pids:
            self.ctl("close_connection", pid, "closed by a test")
        return len(pids)

    async def ready(self, *queues: str) -> int:
        """How many messages wait for delivery in these queues (asked over AMQP, which
        answers at once where ``rabbitmqctl list_queues`` can take seconds under load)."""
        import aio_pika

        connection = await aio_pika.connect(self.amqp, timeout=CTL_TIMEOUT)
        async with connection:
            channel = await connection.channel()
            total = 0
            for name in queues:
                queue = await channel.declare_queue(name, passive=True)
                total += queue.declaration_result.message_count or 0
            return total

    def log_tail(self, lines: int = 40) -> str:
        logs = [*sorted((self.root / "log").glob("*.log")), self.root / "server.out"]
        text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def private_node() -> Iterator[PrivateBroker]:
    """A started private node, stopped and removed afterwards (also on an interrupt, and
    at exit if the context is abandoned)."""
    broker = PrivateBroker(Path(tempfile.mkdtemp(prefix="sourcery-rabbitmq-")))
    atexit.register(broker.close)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
        atexit.unregister(broker.close)

"""``sourcery worker`` and ``sourcery send``: a worker process, commands sent from the CLI."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from private_broker import PrivateBroker
from services import amqp_down, amqp_url

from sourcery._apps.cli import main

BANK = "sourcery.examples.bank:accounts"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["COLUMNS"] = "200"
    env.pop("SOURCERY_BROKER", None)
    return env


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "SOURCERY_BROKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


class WorkerProcess:
    """``sourcery worker`` in a subprocess, its output collected as it comes."""

    def __init__(self, store: str, broker: str, log: Path, *extra: str) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sourcery",
                "worker",
                BANK,
                "--store",
                store,
                "--broker",
                broker,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=_environment(),
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("worker "):
                self._started.set()
        self._started.set()

    def wait_started(self) -> None:
        assert self._started.wait(60), "the worker did not start"
        assert self.process.poll() is None, self.stderr()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._reader.join(10)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(60)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._log_file.close()

    def stderr(self) -> str:
        return self.log.read_text()

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def broker() -> str:
    reason = amqp_down()
    if reason is not None:
        pytest.skip(reason)
    return amqp_url(queues=4)


@pytest.fixture
def worker(tmp_path: Path, broker: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        f"sqlite:///{tmp_path / 'bank.db'}", broker, tmp_path / "worker.log", "--name", "cli"
    )
    try:
        process.wait_started()
        yield process
    finally:
        process.close()


def send(capsys: pytest.CaptureFixture[str], broker: str, *args: str) -> tuple[int, str, str]:
    code = main(["send", BANK, *args, "--broker", broker])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_worker_process_answers_commands_and_exits_cleanly_on_sigterm(
    worker: WorkerProcess, broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = send(capsys, broker, "account/a1", "Deposit", '{"amount": 5}', "--wait")
    assert code == 0
    assert out.startswith("ok: ") and "to account/a1: Deposited" in out

    code, _, err = send(capsys, broker, "account/a1", "Withdraw", '{"amount": 50}', "--wait")
    assert code == 1
    assert "rejected" in err and "InsufficientFunds" in err

    code, out, _ = send(
        capsys, broker, "account/a1", "Deposit", '{"amount": 5}', "--wait", "--message-id", "m1"
    )
    assert (code, out.strip()) == (0, "ok: m1 to account/a1: Deposited")
    code, out, _ = send(
        capsys, broker, "account/a1", "Deposit", '{"amount": 5}', "--wait", "--message-id", "m1"
    )
    assert (code, out.strip()) == (0, "duplicate: m1 to account/a1: Deposited")

    code, out, _ = send(capsys, broker, "account/a1", "Open", '{"owner": "ann"}')
    assert code == 0 and out.startswith("sent ") and out.strip().endswith("to account/a1")

    assert worker.stop() == 0
    assert "worker cli." in worker.output
    # The Open sent without waiting was applied before the worker stopped, or is still
    # queued: either way it was never lost (the next test's worker would get it).
    assert "stopped: " in worker.output
    assert "1 duplicates, 1 rejected, 0 retried, 0 dead letters" in worker.output


def test_a_worker_with_nothing_to_do_stops_on_sigterm(worker: WorkerProcess) -> None:
    assert worker.stop() == 0
    assert "stopped: 0 applied" in worker.output


def eventually(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_started_before_its_broker_waits_for_it(
    tmp_path: Path, private_broker: PrivateBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    url = private_broker.url(queues=2)
    store = f"sqlite:///{tmp_path / 'bank.db'}"
    private_broker.stop()
    process = WorkerProcess(store, url, tmp_path / "worker.log", "--name", "early")
    try:
        try:
            eventually(
                lambda: process.stderr().count("waiting:") >= 2,
                "the worker did not say it waits for the broker",
            )
        finally:
            private_broker.start()
        assert process.process.poll() is None, process.stderr()
        process.wait_started()
        code, out, _ = send(capsys, url, "account/e1", "Open", '{"owner": "eve"}', "--wait")
        assert (code, out.startswith("ok: ")) == (0, True), out
        assert process.stop() == 0
        assert "stopped: 1 applied" in process.output
    finally:
        process.close()


def test_a_worker_waiting_for_its_broker_stops_on_sigterm(tmp_path: Path) -> None:
    url = "amqp://guest:guest@127.0.0.1:1/?prefix=nobody"  # nothing listens on port 1
    process = WorkerProcess(f"sqlite:///{tmp_path / 'b.db'}", url, tmp_path / "worker.log")
    try:
        eventually(lambda: "waiting:" in process.stderr(), "the worker did not wait")
        assert process.process.poll() is None, process.stderr()
        assert process.stop() == 0
        assert "stopped before the broker and the store could be reached" in process.output
        assert "BrokerUnavailable" not in process.stderr()  # waited, did not crash
    finally:
        process.close()


def test_send_times_out_without_a_worker(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = send(
        capsys, broker, "account/a1", "Deposit", '{"amount": 1}', "--wait", "--timeout", "0.2"
    )
    assert code == 1
    assert "no reply" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost/g1", "Deposit", "{}"], "no actor type 'ghost'"),
        (["account/a1", "Close", "{}"], "has no command 'Close'"),
        (["account/a1", "Deposit", '{"amount": "five"}'], "cannot make the command Deposit"),
        (["account/a1", "Deposit", "not json"], "cannot make the command Deposit"),
        (["account/a1", "Deposit", '{"amount": 5, "extra": 1}'], "has no field 'extra'"),
        (["account/a1", "Deposit", "@/no/such/file.json"], "cannot read the command's JSON"),
        (["a1", "Deposit", "{}"], "type/id"),
    ],
)
def test_send_refuses_what_it_cannot_make_a_command_of(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any broker is contacted: this URL goes nowhere.
    code, _, err = send(capsys, "amqp://guest:guest@127.0.0.1:1/", *args)
    assert code == 1
    assert message in " ".join(err.split())


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_send_reads_the_json_from_a_file_or_stdin(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A field the command lacks is refused: so the JSON was read and checked.
    text = '{"amount": 5, "extra": 1}'
    if source == "file":
        (tmp_path / "c.json").write_text(text)
        arg = f"@{tmp_path / 'c.json'}"
    else:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        arg = "-"
    code, _, err = send(capsys, "amqp://guest:guest@127.0.0.1:1/", "account/a1", "Deposit", arg)
    assert code == 1
    assert "has no field 'extra'" in " ".join(err.split())


@pytest.mark.parametrize(
    ("argv", "level"),
    [([], 0), (["-v", "send"], 1), (["send", "-v"], 1), (["send", "-vv"], 2), (["-vv", "send"], 2)],
)
def test_verbose_goes_before_or_after_the_subcommand(argv: list[str], level: int) -> None:
    from sourcery._apps.cli.entry import _parser

    args = _parser().parse_args([*(argv or ["send"]), BANK, "account/a1", "Deposit"])
    assert args.verbose == level


def test_send_and_worker_need_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", BANK, "account/a1", "Open", '{"owner": "x"}']) == 1
    assert "SOURCERY_BROKER" in capsys.readouterr().err
    assert main(["worker", BANK, "--store", "sqlite://:memory:"]) == 1
    assert "SOURCERY_BROKER" in capsys.readouterr().err


def test_a_worker_does_not_wait_for_what_cannot_come(
    tmp_path: Path, broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Waiting is for a broker or store that is not up yet, not for a wrong password or a
    # SQLite file in a folder that does not exist: those fail at once, with the reason.
    good_store = f"sqlite:///{tmp_path / 'ok.db'}"
    wrong = broker.replace("guest:guest@", "guest:not-the-password@", 1)
    assert wrong != broker
    assert main(["worker", BANK, "--store", good_store, "--broker", wrong]) == 1
    err = capsys.readouterr().err
    assert "refused the user or password" in err
    assert "<" not in err and "ProbableAuthenticationError" not in err  # no driver repr
    assert len(err.strip().splitlines()) == 1
    folder = tmp_path / "no-such-folder"
    missing = f"sqlite:///{folder / 'x.db'}"
    assert main(["worker", BANK, "--store", missing, "--broker", broker]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "unable to open database file" in err and "waiting:" not in err
    assert f"cannot open the SQLite file {folder / 'x.db'}" in err
    assert f"the folder {folder} does not exist" in err


def test_an_unreachable_broker_is_one_line_in_our_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nowhere = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1
    assert main(["send", BANK, "account/a1", "Deposit", '{"amount": 1}', "--broker", nowhere]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/: Connection refused"
    ]


def test_worker_refuses_an_app_that_is_not_actor_types(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", "sourcery.examples.bank:Deposit", "--broker", "memory://x"]) == 1
    assert "must be an ActorType" in capsys.readouterr().err

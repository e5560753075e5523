"""The ``sourcery`` command: demo, inspect and migrate, in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sourcery import cli
from sourcery.cli import main
from sourcery.clock import VectorClock
from sourcery.demo import DemoResult
from sourcery.examples.bank import Account, accounts
from sourcery.records import ActorRef
from sourcery.runtime import Runtime
from sourcery.stores import open_store
from sourcery.stores.sqlite import SCHEMA_VERSION

ACCOUNT = "account/acct-00001"
ACTOR_KEYS = {"store", "actor", "heads", "siblings", "frontier", "snapshots", "loose_events"}
EVENT_KEYS = {"dot", "id", "timestamp", "initiated_by", "type", "version", "payload"}


def _environment() -> dict[str, str]:
    """Wide, plain output whatever terminal runs the tests (pytest sets COLUMNS=80)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(autouse=True)
def _wide_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def sourcery(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sourcery`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sourcery", *args],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def figure(output: str, label: str) -> int:
    """The number on the demo summary's row ``label``."""
    found = re.search(rf"^\W*{re.escape(label)}\s*\W\s*([\d,]+)", output, re.MULTILINE)
    assert found, f"no {label!r} in:\n{output}"
    return int(found.group(1).replace(",", ""))


def check_demo_output(output: str, accounts_: int, commands: int) -> None:
    assert "money conserved: yes" in output
    assert figure(output, "accounts") == accounts_
    accepted = figure(output, "commands accepted")
    rejected = figure(output, "commands rejected (insufficient funds)")
    assert accepted + rejected == commands
    assert accepted >= accounts_  # every Open is accepted
    assert figure(output, "events written") == accepted  # one event per accepted command
    assert figure(output, "events read back") == accepted
    assert figure(output, "transactions") >= 1
    money_in = figure(output, "money in (deposited - withdrawn)")
    assert money_in == figure(output, "deposited") - figure(output, "withdrawn")
    assert figure(output, "sum of balances after reopening") == money_in


@dataclass(frozen=True)
class Demo:
    path: Path
    output: str

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """One demo run, shared by the inspect tests (which only read it)."""
    path = tmp_path_factory.mktemp("demo") / "bank.db"
    args = ["--accounts", "50", "--commands", "600", "--snapshot-every", "3", "--seed", "7"]
    completed = sourcery("demo", "--store", str(path), *args)
    assert completed.returncode == 0, completed.stderr
    return Demo(path, completed.stdout)


# -- demo --------------------------------------------------------------------------------


def test_demo_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run starts again from a fresh file
        code = main(["demo", "--accounts", "20", "--commands", "300", "--concurrency", "10"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        check_demo_output(captured.out, 20, 300)
    assert (tmp_path / "sourcery-demo.db").is_file()
    refs = asyncio.run(_actors(f"sqlite:///{tmp_path / 'sourcery-demo.db'}"))
    assert len(refs) == 20


def test_demo_as_a_subprocess(tmp_path: Path) -> None:
    completed = sourcery("demo", "--accounts", "50", "--commands", "500", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    check_demo_output(completed.stdout, 50, 500)
    assert (tmp_path / "sourcery-demo.db").is_file()


def test_demo_reports_snapshots(demo: Demo) -> None:
    check_demo_output(demo.output, 50, 600)
    assert figure(demo.output, "snapshots taken") == asyncio.run(_snapshot_count(demo.url))
    assert figure(demo.output, "snapshots taken") > 0


def test_demo_refuses_a_store_that_holds_actors(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    before = demo.path.stat().st_size
    assert main(["demo", "--store", demo.url, "--accounts", "5", "--commands", "10"]) == 1
    captured = capsys.readouterr()
    assert "already holds actors" in captured.err
    assert "Traceback" not in captured.err
    assert demo.path.stat().st_size == before


def test_demo_exits_1_when_money_is_not_conserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def leaky(url: str, **options: object) -> DemoResult:
        return DemoResult(
            url=url,
            accounts=1,
            commands=2,
            accepted=2,
            rejected=0,
            events=2,
            events_stored=2,
            snapshots=0,
            transactions=2,
            batches=2,
            seconds=0.1,
            deposited=10,
            withdrawn=0,
            balances=9,
        )

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "run_demo", leaky)
    assert main(["demo", "--accounts", "1", "--commands", "2"]) == 1
    out = capsys.readouterr().out
    assert "money conserved: NO" in out
    assert "money conserved: yes" not in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["demo", "--accounts", "0"],
        ["demo", "--accounts", "ten"],
        ["demo", "--accounts", "10", "--commands", "5"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "inspect", "migrate"):
        assert command in out


# -- inspect -----------------------------------------------------------------------------


async def _actors(url: str) -> list[ActorRef]:
    store = await open_store(url)
    try:
        return await store.actors(limit=1000)
    finally:
        await store.aclose()


async def _snapshot_count(url: str) -> int:
    store = await open_store(url)
    try:
        return sum([len(await store.snapshots(ref)) for ref in await store.actors(limit=1000)])
    finally:
        await store.aclose()


@dataclass(frozen=True)
class Truth:
    heads: list[VectorClock]
    snapshots: int
    frontier: VectorClock
    balance: int


async def _truth(url: str, actor: ActorRef) -> Truth:
    store = await open_store(url)
    try:
        heads = [h.clock for h in await store.heads(actor)]
        snapshots = len(await store.snapshots(actor))
        frontier = await store.frontier(actor)
    finally:
        await store.aclose()
    async with Runtime.open(url, [accounts]) as rt:
        state = await rt.state(actor)
    assert isinstance(state, Account)
    return Truth(heads, snapshots, frontier, state.balance)


def test_inspect_an_actor(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    truth = asyncio.run(_truth(demo.url, ActorRef.parse(ACCOUNT)))
    assert main(["inspect", str(demo.path), ACCOUNT]) == 0
    out = capsys.readouterr().out
    assert ACCOUNT in out
    assert f"heads ({len(truth.heads)})" in out
    assert "siblings: no" in out
    assert f"snapshots ({truth.snapshots})" in out
    assert "loose events (" in out
    for writer, n in truth.heads[0].items():
        assert f"{writer}: {n}" in out
    for writer, n in truth.frontier.items():
        assert f"{writer}: {n}" in out


def test_inspect_json(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    truth = asyncio.run(_truth(demo.url, ActorRef.parse(ACCOUNT)))
    assert main(["inspect", demo.url, ACCOUNT, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == ACTOR_KEYS
    assert report["actor"] == ACCOUNT
    assert report["siblings"] is False
    assert [VectorClock(h["clock"]) for h in report["heads"]] == truth.heads
    assert VectorClock(report["frontier"]) == truth.frontier
    assert len(report["snapshots"]) == truth.snapshots > 0
    for snapshot in report["snapshots"]:
        assert set(snapshot) == {"clock", "parents", "timestamp", "state_bytes", "pack_events"}
        assert snapshot["pack_events"] == 3
    # The head, plus the loose events, is the state the runtime reads: nothing is missed.
    (head,) = report["heads"]
    loose = report["loose_events"]
    assert len(loose) == truth.frontier.total() - VectorClock(head["clock"]).total()
    balance = head["state"]["balance"]
    for event in loose:
        assert set(event) == EVENT_KEYS
        assert re.fullmatch(r"[0-9a-f]{32}", event["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
        assert event["version"] == 1
        writer, n = event["dot"]
        assert n > VectorClock(head["clock"]).get(writer)
        if event["type"] == "Deposited":
            balance += event["payload"]["amount"]
        elif event["type"] == "Withdrew":
            balance -= event["payload"]["amount"]
    assert balance == truth.balance


def test_inspect_lists_actors(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(demo.path)]) == 0
    out = capsys.readouterr().out
    assert ACCOUNT in out
    assert "account/acct-00050" in out
    assert main(["inspect", str(demo.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["actors"]) == 50
    assert report["actors"][0] == ACCOUNT
    assert report["more"] is False


def test_inspect_an_unknown_actor(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(demo.path), "account/nobody", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads"] == [] and report["snapshots"] == [] and report["loose_events"] == []


@pytest.mark.parametrize("form", ["path", "url"])
def test_inspect_a_missing_file(
    form: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    target = "missing.db" if form == "path" else "sqlite:///missing.db"
    assert main(["inspect", target, ACCOUNT]) == 1
    err = capsys.readouterr().err
    assert "no such store file" in err
    assert "missing.db" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_inspect_refuses_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.close()
    for path in (text, other):
        assert main(["inspect", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err
    con = sqlite3.connect(other)
    tables = [row[0] for row in con.execute("SELECT name FROM sqlite_master")]
    con.close()
    assert tables == ["t"]  # inspect did not turn it into a store


def test_inspect_a_bad_actor_ref(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(demo.path), "no-slash"]) == 1
    err = capsys.readouterr().err
    assert "type/id" in err and "Traceback" not in err


# -- migrate -----------------------------------------------------------------------------


def test_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", "sqlite:///fresh.db"]) == 0
    assert f"schema version {SCHEMA_VERSION} (created)" in capsys.readouterr().out
    assert main(["migrate", "fresh.db"]) == 0
    assert f"schema version {SCHEMA_VERSION} (up to date)" in capsys.readouterr().out
    con = sqlite3.connect(tmp_path / "fresh.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_migrate_uses_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCERY_STORE", "sqlite:///from-env.db")
    assert main(["migrate"]) == 0
    assert "from-env.db" in capsys.readouterr().out
    assert (tmp_path / "from-env.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db?bogus=1", "unknown sqlite URL parameter"),
        ("postgresql://nobody:secret@127.0.0.1:5432/db", "cannot connect to"),
        ("redis://user:secret@localhost/0", "no store for URL scheme"),
    ],
)
def test_store_errors_are_one_clean_line(
    url: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", url]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "secret" not in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

"""The ``sourcery`` command: demo, inspect, sync, replicate and migrate, in-process and as a
subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from services import POSTGRES, TEST_SCHEMA_PREFIX, postgres_down

from sourcery._apps.cli import demo as demo_command
from sourcery._apps.cli import main
from sourcery._apps.demo import DemoResult, ReplicatedDemoResult, Side
from sourcery._core.actor import ActorType
from sourcery._core.clock import VectorClock
from sourcery._core.records import ActorRef
from sourcery._engine.runtime import Runtime
from sourcery._stores import open_store
from sourcery._stores.sqlite import SCHEMA_VERSION
from sourcery.examples.bank import (
    Account,
    BankEvent,
    Command,
    Deposit,
    Open,
    Withdraw,
    accounts,
)
from sourcery.replication import SyncReport, sync

ACCOUNT = "account/acct-00001"
ACTOR_KEYS = {
    "store",
    "actor",
    "writers",
    "state",
    "heads",
    "siblings",
    "frontier",
    "snapshots",
    "loose_events",
}
SNAPSHOT_KEYS = {
    "clock",
    "parents",
    "timestamp",
    "state_bytes",
    "pack_events",
    "head",
    "compensations",
}
SVG = "{http://www.w3.org/2000/svg}"
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


def figures(output: str, label: str) -> list[int | None]:
    """The numbers on the replicated demo's row ``label``: replica A, replica B, both."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line)]
        if len(cells) >= 5 and cells[1] == label:
            return [int(c.replace(",", "")) if c else None for c in cells[2:5]]
    raise AssertionError(f"no row {label!r} in:\n{output}")


def check_replicated_output(output: str, accounts_: int, commands: int) -> None:
    assert "money conserved: yes" in output
    assert "replicas agree: yes" in output
    a, b, both = figures(output, "commands")
    assert a is not None and b is not None and a + b == both == commands
    accepted = figures(output, "commands accepted")
    rejected = figures(output, "commands rejected (insufficient funds)")
    assert accepted[0] is not None and accepted[0] >= accounts_  # every Open is on A
    for i in range(3):
        assert (accepted[i] or 0) + (rejected[i] or 0) == [a, b, both][i]
    deposited = figures(output, "deposited")[2]
    withdrawn = figures(output, "withdrawn")[2]
    assert deposited is not None and withdrawn is not None
    balances = figures(output, "sum of balances")
    assert balances[0] == balances[1] == deposited - withdrawn
    stored = figures(output, "snapshots stored")
    assert stored[0] == stored[1]
    merges = figures(output, "merge snapshots stored")
    assert merges[0] == merges[1]
    compensations = figures(output, "compensations (Overdrawn events recorded)")
    assert compensations[0] == compensations[1]
    found = re.search(r"phase 2\s+partition: ([\d,]+) commands on A and ([\d,]+) on B", output)
    assert found, output
    assert int(found.group(2).replace(",", "")) == b


def check_history_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    groups = [g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()]
    assert any("head" in g.get("class", "").split() for g in groups)
    return root


def test_demo_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--accounts", "20", "--commands", "300", "--concurrency", "10", "--seed", "5"]
    for _ in range(2):  # the second run starts again from fresh files
        code = main(["demo", *args])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        check_replicated_output(captured.out, 20, 300)
    for name in ("sourcery-demo-a.db", "sourcery-demo-b.db"):
        refs = asyncio.run(_actors(f"sqlite:///{tmp_path / name}"))
        assert len(refs) == 20
    assert "sourcery-demo-history.svg" in captured.out
    check_history_svg(tmp_path / "sourcery-demo-history.svg")
    assert not (tmp_path / "sourcery-demo.db").exists()


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The default demo, as ``make demo`` runs it (with a fixed seed), in a subprocess."""
    cwd = tmp_path_factory.mktemp("showcase")
    completed = sourcery("demo", "--seed", "1", cwd=cwd)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return Demo(cwd / "sourcery-demo-a.db", completed.stdout)


def test_default_demo_heals_divergences(showcase: Demo) -> None:
    out = showcase.output
    check_replicated_output(out, 1000, 20_000)
    a, b, both = figures(out, "divergences healed")
    assert a is not None and b is not None and a > 0 and b > 0 and both == a + b
    merges = figures(out, "merge snapshots stored")[0]
    assert merges is not None and merges > 0
    merged = figures(out, "events merged")[2]
    assert merged is not None and merged > 0
    found = re.search(r"([\d,]+) accounts had siblings", out)
    assert found and int(found.group(1).replace(",", "")) > 0
    # The picture of the most diverged account shows at least one merge.
    root = check_history_svg(showcase.path.parent / "sourcery-demo-history.svg")
    classes = [g.get("class", "").split() for g in root.iter(f"{SVG}g")]
    assert any("merge" in c for c in classes)
    assert "sourcery-demo-history.svg" in out


def test_default_demo_replicas_hold_the_same_records(showcase: Demo) -> None:
    url_b = f"sqlite:///{showcase.path.parent / 'sourcery-demo-b.db'}"
    held_a = asyncio.run(_holdings(showcase.url))
    assert len(held_a) == 1000
    assert asyncio.run(_holdings(url_b)) == held_a


def test_demo_as_a_subprocess(tmp_path: Path) -> None:
    completed = sourcery("demo", "--accounts", "50", "--commands", "500", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    check_replicated_output(completed.stdout, 50, 500)
    assert (tmp_path / "sourcery-demo-a.db").is_file()
    assert (tmp_path / "sourcery-demo-b.db").is_file()


def test_single_store_demo_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--accounts", "20", "--commands", "300", "--concurrency", "10"]
    assert main(["demo", "--store", "bank.db", *args]) == 0
    check_demo_output(capsys.readouterr().out, 20, 300)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["bank.db"]


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


def _side(name: str, balances: int) -> Side:
    return Side(
        name=name,
        url=f"sqlite:///{name}.db",
        commands=2,
        accepted=2,
        rejected=0,
        deposited=10 if name == "A" else 0,
        withdrawn=0,
        balances=balances,
        overdrafts=0,
        snapshots=0,
        merges=0,
        divergences=0,
        resolved=0,
        events_merged=0,
        compensations=0,
    )


def _replicated(balances_b: int, disagreements: tuple[str, ...]) -> ReplicatedDemoResult:
    return ReplicatedDemoResult(
        accounts=1,
        commands=4,
        a=_side("A", 10),
        b=_side("B", balances_b),
        opening_commands=2,
        opening=SyncReport(2, 2),
        heal=SyncReport(2, 2),
        settle=SyncReport(0, 0),
        siblings=0,
        disagreements=disagreements,
        most_diverged=ActorRef("account", "acct-00001"),
        most_diverged_snapshots=0,
        most_diverged_merges=0,
        history_svg="<svg xmlns='http://www.w3.org/2000/svg'/>",
        seconds=0.1,
        phase_seconds=(0.1, 0.0, 0.0),
    )


@pytest.mark.parametrize(
    ("balances_b", "disagreements", "conserved", "agree"),
    [(9, (), False, True), (10, ("account/acct-00001",), True, False)],
)
def test_demo_exits_1_when_money_is_not_conserved_or_replicas_disagree(
    balances_b: int,
    disagreements: tuple[str, ...],
    conserved: bool,
    agree: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def broken(url_a: str, url_b: str, **options: object) -> ReplicatedDemoResult:
        return _replicated(balances_b, disagreements)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo_command, "run_replicated_demo", broken)
    assert main(["demo", "--accounts", "1", "--commands", "4"]) == 1
    out = capsys.readouterr().out
    assert ("money conserved: yes" in out) == conserved
    assert ("money conserved: NO" in out) == (not conserved)
    assert ("replicas agree: yes" in out) == agree
    assert ("replicas agree: NO" in out) == (not agree)
    if not agree:
        assert "account/acct-00001" in out


def test_demo_prints_each_phase_as_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sourcery._apps.demo import replicated

    seen: list[str] = []
    heal = replicated._heal

    async def healing(run: object) -> object:
        # By the time the heal starts, phases 1 and 2 are on stdout already.
        seen.append(capsys.readouterr().out)
        return await heal(run)  # type: ignore[arg-type]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(replicated, "_heal", healing)
    assert main(["demo", "--accounts", "5", "--commands", "60", "--seed", "2"]) == 0
    (before_heal,) = seen
    assert "phase 1  opened 5 accounts" in before_heal
    assert "phase 2  partition" in before_heal
    assert "phase 3" not in before_heal
    rest = capsys.readouterr().out
    assert "phase 3  heal" in rest and rest.index("phase 3") < rest.index("money conserved")


def test_demo_shows_a_bar_with_the_phase_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    screens: list[str] = []
    terminal = io.StringIO()
    fake = Console(file=terminal, force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr("sourcery._apps.cli.entry.console", lambda stderr: fake)
    monkeypatch.chdir(tmp_path)
    made = demo_command._Bar.__init__

    def watching(self: object, advance: object, describe: object) -> None:
        def spy(text: str) -> None:  # what the bar is told as each phase ends
            screens.append(text)
            describe(text)  # type: ignore[operator]

        made(self, advance, spy)  # type: ignore[arg-type]

    monkeypatch.setattr(demo_command._Bar, "__init__", watching)
    assert main(["demo", "--accounts", "5", "--commands", "60", "--seed", "2"]) == 0
    assert screens == list(demo_command.PHASES[1:])
    shown = terminal.getvalue()
    assert "phase 1 open" in shown and "60/60" in shown  # the bar, drawn on the terminal


def test_single_store_demo_exits_1_when_money_is_not_conserved(
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
    monkeypatch.setattr(demo_command, "run_demo", leaky)
    assert main(["demo", "--store", "x.db", "--accounts", "1", "--commands", "2"]) == 1
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
        ["inspect", "x.db", "--svg", "x.svg"],
        ["sync", "a.db"],
        ["replicate", "a.db", "b.db", "--interval", "0"],
        ["replicate", "a.db", "b.db", "--interval", "soon"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "inspect", "sync", "replicate", "migrate"):
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


async def _truth(
    url: str, actor: ActorRef, kind: ActorType[Account, Command, BankEvent] = accounts
) -> Truth:
    store = await open_store(url)
    try:
        heads = [h.clock for h in await store.heads(actor)]
        snapshots = len(await store.snapshots(actor))
        frontier = await store.frontier(actor)
    finally:
        await store.aclose()
    async with Runtime.open(url, [kind]) as rt:
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
    assert main(["inspect", str(demo.path), ACCOUNT, "--json"]) == 0
    names = json.loads(capsys.readouterr().out)["writers"]
    assert sorted(names.values()) == ["a"]  # one writer in the single-replica demo
    legend = ", ".join(f"{name} = {writer}" for writer, name in names.items())
    assert f"writers: {legend}" in out
    for writer, n in truth.heads[0].items():
        assert f"{names[writer]}:{n}" in out
    for writer, n in truth.frontier.items():
        assert f"frontier: {names[writer]}:{n}" in out


def test_inspect_names_writers_as_the_picture_does_and_fits_80_columns(
    showcase: Demo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    db = str(showcase.path)
    assert main(["inspect", db, "--json", "--limit", "10000"]) == 0
    refs = json.loads(capsys.readouterr().out)["actors"]
    svg = tmp_path / "h.svg"
    for ref in refs:  # the first account with a merge
        assert main(["inspect", db, ref, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        if any(len(s["parents"]) > 1 for s in report["snapshots"]):
            break
    else:
        pytest.fail("no merged account in the demo")
    assert main(["inspect", db, ref, "--svg", str(svg)]) == 0
    out = capsys.readouterr().out
    names = report["writers"]
    assert {"a", "b", "m1"} <= set(names.values())
    picture = svg.read_text(encoding="utf-8")
    merge = next(s for s in report["snapshots"] if len(s["parents"]) > 1)
    label = " ".join(
        f"{names[w]}:{n}"
        for w, n in sorted(
            merge["clock"].items(), key=lambda item: (names[item[0]][0] == "m", names[item[0]])
        )
    )
    assert label in picture and label in out  # the same short names in both
    for writer in names:
        # a full writer id shows once, in the legend, never cut across lines in a table
        assert out.count(writer) == 1, writer


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
        assert set(snapshot) == SNAPSHOT_KEYS
        assert snapshot["pack_events"] == 3
        assert snapshot["compensations"] == 0
        assert snapshot["head"] == (VectorClock(snapshot["clock"]) in truth.heads)
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


def test_inspect_shows_the_current_state_with_the_app(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = asyncio.run(_truth(demo.url, ActorRef.parse(ACCOUNT)))
    app = "sourcery.examples.bank:accounts"
    assert main(["inspect", str(demo.path), ACCOUNT, "--json", "--app", app]) == 0
    report = json.loads(capsys.readouterr().out)
    state = report["state"]
    assert state["value"]["balance"] == truth.balance
    assert state["loose_events_applied"] == len(report["loose_events"]) > 0
    assert main(["inspect", str(demo.path), ACCOUNT, "--app", app]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert 'loose events): {"owner": ' in out and f'"balance": {truth.balance}' in out
    # Without the app, it says what it needs.
    assert main(["inspect", str(demo.path), ACCOUNT]) == 0
    assert "state: (give --app MODULE:ATTR" in " ".join(capsys.readouterr().out.split())
    assert main(["inspect", str(demo.path), ACCOUNT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["value"] is None
    # An app without the actor's type, or without an actor, is refused.
    assert main(["inspect", str(demo.path), "cart/c1", "--app", app]) == 1
    assert "has no actor type 'cart'" in capsys.readouterr().err
    assert main(["inspect", str(demo.path), "--app", app]) == 2


def test_inspect_pages_through_the_actors(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(demo.path), "--json", "--limit", "1000"]) == 0
    everyone = json.loads(capsys.readouterr().out)["actors"]
    pages: list[list[str]] = []
    after: list[str] = []
    while True:
        assert main(["inspect", str(demo.path), "--json", "--limit", "7", *after]) == 0
        report = json.loads(capsys.readouterr().out)
        pages.append(report["actors"])
        if report["next"] is None:
            break
        after = ["--after", report["next"]]
    assert [a for page in pages for a in page] == everyone
    assert all(len(page) == 7 for page in pages[:-1])
    assert main(["inspect", str(demo.path), "--limit", "7"]) == 0
    out = capsys.readouterr().out
    assert f"--after {pages[0][-1]}" in out
    assert main(["inspect", str(demo.path), ACCOUNT, "--after", ACCOUNT]) == 2


@pytest.mark.parametrize("form", [[], ["--json"]])
def test_inspect_an_unknown_actor(
    demo: Demo, form: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(demo.path), "account/nobody", *form]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "no actor account/nobody in" in " ".join(err.split())


def test_inspect_cuts_a_long_payload_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.db"

    async def write() -> None:
        async with Runtime.open(f"sqlite:///{path}", [accounts]) as rt:
            await rt.send(accounts("big"), Open("x" * 100_000))

    asyncio.run(write())
    assert main(["inspect", str(path), "account/big"]) == 0
    short = capsys.readouterr().out
    assert len(short) < 5_000
    assert "more characters; --full shows all" in " ".join(short.split())
    assert main(["inspect", str(path), "account/big", "--full"]) == 0
    assert "x" * 100_000 in "".join(capsys.readouterr().out.split())


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


# -- inspect --svg -----------------------------------------------------------------------

ALICE = ActorRef("account", "alice")
EVERY_2 = dataclasses.replace(accounts, snapshot_every=2)


async def _diverge(url_a: str, url_b: str, actor: ActorRef = ALICE) -> None:
    """Replicas whose snapshots of ``actor`` diverged, exchanged but not read since.

    Each side withdraws 60 of the 100 both saw: together they overdraw the account.
    """
    store_a = await open_store(url_a)
    store_b = await open_store(url_b)
    rt_a = Runtime(store_a, [EVERY_2])
    rt_b = Runtime(store_b, [EVERY_2])
    await store_a.register_writer(rt_a.writer)
    await store_b.register_writer(rt_b.writer)
    try:
        await rt_a.send(actor, Open("alice"))
        await rt_a.send(actor, Deposit(100))  # a snapshot: both replicas start from it
        await sync(store_a, store_b, touched_a=rt_a.forget, touched_b=rt_b.forget)
        for rt in (rt_a, rt_b):
            await rt.send(actor, Withdraw(30))
            await rt.send(actor, Withdraw(30))  # a snapshot on each side: siblings
        await sync(store_a, store_b, touched_a=rt_a.forget, touched_b=rt_b.forget)
    finally:
        for rt in (rt_a, rt_b):
            await rt.aclose()
        await store_a.aclose()
        await store_b.aclose()


async def _read(url: str, actor: ActorRef) -> Account:
    async with Runtime.open(url, [EVERY_2]) as rt:
        state = await rt.state(actor)
    assert isinstance(state, Account)
    return state


def svg_nodes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "").split()]


def svg_edges(root: ET.Element) -> list[tuple[str, str]]:
    return [
        (p.get("data-from", ""), p.get("data-to", ""))
        for p in root.iter(f"{SVG}path")
        if p.get("class") == "edge"
    ]


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [g for g in svg_nodes(root) if name in g.get("class", "").split()]


def test_inspect_svg_of_siblings_and_of_their_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url_b = "sqlite:///b.db"
    asyncio.run(_diverge("sqlite:///a.db", url_b))

    assert main(["inspect", "b.db", str(ALICE), "--svg", "before.svg"]) == 0
    out = capsys.readouterr().out
    assert "siblings: yes, 2 heads" in out
    assert "history drawn to before.svg" in out
    root = ET.parse(tmp_path / "before.svg").getroot()
    assert len(svg_nodes(root)) == 3 + 1  # the shared snapshot, one per side, the root
    assert len(with_class(root, "root")) == 1
    assert len(with_class(root, "head")) == 2
    assert with_class(root, "merge") == []
    assert len(svg_edges(root)) == 3
    truth = asyncio.run(_truth(url_b, ALICE, EVERY_2))  # reading resolves the siblings
    assert truth.balance == -20

    assert main(["inspect", "b.db", str(ALICE), "--svg", "after.svg", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # the note about the picture went to stderr
    assert "after.svg" in captured.err
    assert report["siblings"] is False
    (merge,) = [s for s in report["snapshots"] if len(s["parents"]) == 2]
    assert merge["head"] is True and merge["compensations"] == 1
    root = ET.parse(tmp_path / "after.svg").getroot()
    nodes = svg_nodes(root)
    assert len(nodes) == truth.snapshots + 1 + 1  # and the merge the read wrote
    (head,) = with_class(root, "head")
    assert {"merge", "compensating"} <= set(head.get("class", "").split())
    assert "1 compensating: Overdrawn" in "".join(head.itertext())
    ids = {g.get("id") for g in nodes}
    edges = svg_edges(root)
    assert len(edges) == 3 + 2  # the merge links to both heads it resolved
    assert all(a in ids and b in ids for a, b in edges)
    assert sum(1 for _, child in edges if child == head.get("id")) == 2

    assert main(["inspect", "b.db", str(ALICE)]) == 0
    out = capsys.readouterr().out
    assert "siblings: no (1 head)" in out
    assert "head, merge, 1 compensating" in out


def test_inspect_svg_escapes_hostile_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    hostile = ActorRef("account", "<&\"'>[b]]]>\x01x")
    asyncio.run(_write("sqlite:///h.db", hostile, deposits=3, every=1))
    assert main(["inspect", "h.db", str(hostile), "--svg", "h.svg"]) == 0
    out = capsys.readouterr().out
    assert "[b]" in out  # shown as it is, not read as rich markup
    svg = (tmp_path / "h.svg").read_text(encoding="utf-8")
    assert "<&" not in svg
    root = ET.fromstring(svg.encode("utf-8"))
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == f"history of {hostile}".replace("\x01", "\\x01")
    assert len(svg_nodes(root)) == 4 + 1  # Open and three deposits, one snapshot each
    assert len(with_class(root, "head")) == 1


def test_inspect_svg_to_an_unwritable_path(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.svg"
    assert main(["inspect", str(demo.path), ACCOUNT, "--svg", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


# -- sync and replicate -------------------------------------------------------------------


async def _write(url: str, actor: ActorRef, *, deposits: int, every: int = 100) -> None:
    kind = dataclasses.replace(accounts, snapshot_every=every)
    async with Runtime.open(url, [kind]) as rt:
        await rt.send(actor, Open(actor.id))
        for _ in range(deposits):
            await rt.send(actor, Deposit(10))


async def _holdings(url: str) -> dict[ActorRef, tuple[VectorClock, list[VectorClock]]]:
    """Every actor's frontier and head clocks: equal holdings mean the same records."""
    store = await open_store(url)
    try:
        held = {}
        for ref in await store.actors(limit=10_000):
            heads = sorted((h.clock for h in await store.heads(ref)), key=VectorClock.to_bytes)
            held[ref] = (await store.frontier(ref), heads)
        return held
    finally:
        await store.aclose()


async def _sync_urls(url_a: str, url_b: str) -> SyncReport:
    a, b = await open_store(url_a), await open_store(url_b)
    try:
        return await sync(a, b)
    finally:
        await a.aclose()
        await b.aclose()


def copied(output: str, source: str, destination: str) -> int:
    found = re.search(rf"{re.escape(source)} -> {re.escape(destination)}: ([\d,]+) records", output)
    assert found, output
    return int(found.group(1).replace(",", ""))


def test_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(_write("sqlite:///a.db", ActorRef("account", "alice"), deposits=3))
    asyncio.run(_write("sqlite:///b.db", ActorRef("account", "bob"), deposits=1))
    assert main(["sync", "a.db", "sqlite:///b.db"]) == 0
    out = capsys.readouterr().out
    assert copied(out, "a.db", "sqlite:///b.db") >= 4  # alice's four events at least
    assert copied(out, "sqlite:///b.db", "a.db") >= 2  # bob's two
    held = asyncio.run(_holdings("sqlite:///a.db"))
    assert set(held) == {ActorRef("account", "alice"), ActorRef("account", "bob")}
    assert asyncio.run(_holdings("sqlite:///b.db")) == held
    for _ in range(3):  # whatever was echoed back, it settles and stays settled
        assert main(["sync", "a.db", "b.db"]) == 0
    last = capsys.readouterr().out.splitlines()[-3:]
    assert last[:2] == ["a.db -> b.db: 0 records", "b.db -> a.db: 0 records"]
    assert asyncio.run(_holdings("sqlite:///b.db")) == held


def test_sync_heals_divergent_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(_diverge("sqlite:///a.db", "sqlite:///b.db"))
    a, b = asyncio.run(_read("sqlite:///a.db", ALICE)), asyncio.run(_read("sqlite:///b.db", ALICE))
    assert a == b == Account(owner="alice", balance=-20, overdrafts=1)
    assert main(["sync", "a.db", "b.db"]) == 0
    capsys.readouterr()
    assert asyncio.run(_holdings("sqlite:///a.db")) == asyncio.run(_holdings("sqlite:///b.db"))


@pytest.mark.parametrize("command", ["sync", "replicate"])
@pytest.mark.parametrize("missing_first", [True, False])
def test_sync_and_replicate_refuse_a_missing_file(
    command: str,
    missing_first: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(_write("sqlite:///a.db", ALICE, deposits=1))
    before = sorted(p.name for p in tmp_path.iterdir())
    stores = ["missing.db", "a.db"] if missing_first else ["a.db", "sqlite:///missing.db"]
    assert main([command, *stores]) == 1
    err = capsys.readouterr().err
    assert "no such store file" in err and "missing.db" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["sync", "replicate"])
def test_sync_and_replicate_refuse_one_store_twice(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(_write("sqlite:///a.db", ALICE, deposits=1))
    assert main([command, "a.db", "sqlite:///a.db"]) == 1
    err = capsys.readouterr().err
    assert "same store" in err and "Traceback" not in err


def _wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_replicate_until_signalled(sig: signal.Signals, tmp_path: Path) -> None:
    url_a, url_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    asyncio.run(_write(url_a, ALICE, deposits=3))
    asyncio.run(_holdings(url_b))  # creates an empty store
    process = subprocess.Popen(
        [sys.executable, "-m", "sourcery", "replicate", "a.db", "b.db", "--interval", "0.1"],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def caught_up(*actors: ActorRef) -> bool:
            held_a = asyncio.run(_holdings(url_a))
            return set(actors) <= set(held_a) and asyncio.run(_holdings(url_b)) == held_a

        _wait_until(lambda: caught_up(ALICE), "B to catch up with A")
        # It keeps going: what either side writes next flows to the other.
        carol, bob = ActorRef("account", "carol"), ActorRef("account", "bob")
        asyncio.run(_write(url_a, carol, deposits=2))
        asyncio.run(_write(url_b, bob, deposits=2))
        _wait_until(lambda: caught_up(ALICE, bob, carol), "the new writes to cross")
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "replicating a.db <-> b.db every 0.1 s" in out
    assert copied(out, "a.db", "b.db") > 0
    assert re.search(r"stopped after [\d,]+ rounds; [\d,]+ records copied", out), out
    assert asyncio.run(_read(url_b, carol)) == Account(owner="carol", balance=20)
    assert asyncio.run(_read(url_a, bob)) == Account(owner="bob", balance=20)


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


@pytest.mark.skipif(postgres_down() is not None, reason=str(postgres_down()))
def test_migrate_a_postgres_store(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{POSTGRES}?schema={TEST_SCHEMA_PREFIX}cli_migrate"
    assert main(["migrate", url]) == 0
    assert f"schema version {SCHEMA_VERSION} (created)" in capsys.readouterr().out
    assert main(["migrate", url]) == 0
    assert f"schema version {SCHEMA_VERSION} (up to date)" in capsys.readouterr().out

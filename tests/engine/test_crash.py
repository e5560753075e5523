"""Invariant 1 under ``kill -9``: every acknowledged message is durable, none half-written.

A child process runs a runtime on a SQLite file and prints the id of every message it was
told is done. The parent kills it with SIGKILL at a random moment, then opens the store
and checks what survived.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from crash_actor import Part, Progress, triples

from sourcery import Runtime, VectorClock
from sourcery._core.codec import Codec
from sourcery._core.history import fold

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

TESTS_DIR = Path(__file__).resolve().parents[1]
ACTORS = 150
WORKERS = 64

CHILD = """
import asyncio
import sys

from crash_actor import Bump, triples
from sourcery import Runtime


async def main(url: str, actors: int, workers: int) -> None:
    async with Runtime.open(url, [triples]) as rt:
        print("ready", rt.writer, flush=True)

        async def worker(w: int) -> None:
            i = 0
            while True:
                actor = f"a{(w * 7919 + i * 31) % actors}"
                message = f"{actor}:{w}:{i}"
                await rt.send(triples(actor), Bump(message), message_id=message)
                sys.stdout.write(f"ack {message}\\n")
                sys.stdout.flush()
                i += 1

        await asyncio.gather(*(worker(w) for w in range(workers)))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def run_and_kill(tmp_path: Path, db: Path, kill_after: int) -> tuple[set[str], str]:
    """Run the child until it acknowledged ``kill_after`` messages, SIGKILL it, and return
    every message id it acknowledged (including those still in the pipe) and its writer."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    stderr_path = tmp_path / "child.err"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), f"sqlite:///{db}", str(ACTORS), str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert proc.stdout is not None
    acked: set[str] = set()
    writer = ""
    deadline = time.monotonic() + 300  # a guard against a hung child, not a speed check
    try:
        while len(acked) < kill_after:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                pytest.fail(
                    f"child exited early ({proc.returncode}): {stderr_path.read_text()[-3000:]}"
                )
            words = line.decode().split()
            if words[0] == "ready":
                writer = words[1]
            else:
                assert words[0] == "ack", line
                acked.add(words[1])
            if time.monotonic() > deadline:
                pytest.fail(f"child hung: {len(acked)} acks in 300 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Whatever complete lines are still in the pipe were acknowledged too.
    rest = proc.stdout.read()
    proc.stdout.close()
    for line in rest.split(b"\n")[:-1]:
        words = line.decode().split()
        assert words[0] == "ack", line
        acked.add(words[1])
    assert writer
    return acked, writer


@pytest.mark.parametrize("attempt", range(3))
async def test_sigkill_loses_no_acknowledged_message(tmp_path: Path, attempt: int) -> None:
    kill_after = random.Random().randrange(50, 2001)
    db = tmp_path / "crash.db"
    acked, writer = run_and_kill(tmp_path, db, kill_after)
    where = f"(killed after {kill_after} acks, {len(acked)} acknowledged)"
    assert len(acked) >= kill_after

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT actor_id, writer, n, id, timestamp, initiated_by, type, version, payload"
            " FROM events WHERE actor_type = 'triple'"
        ).fetchall()
        frontier = dict(
            ((actor_id, w), n)
            for actor_id, w, n in con.execute(
                "SELECT w.actor_id, w.writer, max(e.n) FROM actor_writers w JOIN events e"
                " ON e.actor_id = w.actor_id AND e.actor_type = w.actor_type"
                " AND e.writer = w.writer GROUP BY w.actor_id, w.writer"
            )
        )
    finally:
        con.close()

    per_message = Counter(row[5] for row in rows)
    missing = sorted(m for m in acked if per_message[m] != 3)
    assert not missing, f"acknowledged but not (fully) stored {where}: {missing[:10]}"
    partial = {m: c for m, c in per_message.items() if c != 3}
    assert not partial, f"half-written messages {where}: {partial}"
    assert all(row[1] == writer for row in rows)
    for row in rows:
        assert row[5].startswith(row[0] + ":"), f"event of {row[5]} stored under {row[0]}"

    codec = Codec(triples)
    by_actor: dict[str, list[tuple[int, bytes, Part]]] = defaultdict(list)
    dots: dict[str, list[int]] = defaultdict(list)
    for actor_id, _, n, event_id, timestamp, _, kind, version, payload in rows:
        by_actor[actor_id].append(
            (timestamp, event_id, codec.decode_payload(kind, version, payload))
        )
        dots[actor_id].append(n)
    for actor_id, ns in dots.items():
        assert sorted(ns) == list(range(1, len(ns) + 1)), f"gap in the dots of {actor_id}"
        assert frontier[(actor_id, writer)] == len(ns)

    async with Runtime.open(f"sqlite:///{db}", [triples]) as rt:
        for i in range(ACTORS):
            actor_id = f"a{i}"
            events = sorted(by_actor.get(actor_id, []), key=lambda t: (t[0], t[1]))
            expected = fold(triples.evolve, triples.initial, [e for _, _, e in events])
            state = await rt.state(triples(actor_id))
            assert state == expected, f"{actor_id} {where}"
            assert isinstance(state, Progress)
            assert state.parts == len(events) == 3 * state.messages
            clock = await rt.clock(triples(actor_id))
            assert clock == (VectorClock({writer: len(events)}) if events else VectorClock())
        # The store goes on working after the crash.
        out = await rt.send(triples("a0"), triples.commands[0]("after"), message_id="after")
        assert out.state.parts == len(by_actor.get("a0", [])) + 3

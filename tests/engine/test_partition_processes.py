"""Two replicas in two OS processes, a partition between them, and a ``kill -9`` during it.

Each child process runs a runtime on its own SQLite file and writes to the same actors,
printing every token it was told is durable. The parent is the link: it syncs the two files
through its own connections every few milliseconds, stops doing so (the partition) while
both children keep writing, kills one child with SIGKILL during the partition, starts a new
one on the same file (a new writer), and restores the link. Once the children are gone and
the files have exchanged everything, both replicas must hold every acknowledged token exactly
once, and agree on state and vector clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from partition_actor import Log, duplicates, log_kind

from sourcery import Runtime, Store, VectorClock, open_store
from sourcery.replication import sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

TESTS_DIR = Path(__file__).resolve().parents[1]
ACTORS = 6
WORKERS = 2
SNAPSHOT_EVERY = 4
kind = log_kind(SNAPSHOT_EVERY)
REFS = [kind(f"p{k}") for k in range(ACTORS)]

CHILD = """
import asyncio
import sys

from partition_actor import Append, log_kind
from sourcery import Runtime


async def main(url: str, prefix: str, actors: int, workers: int, every: int) -> None:
    kind = log_kind(every)
    refs = [kind(f"p{k}") for k in range(actors)]
    async with Runtime.open(url, [kind]) as rt:
        print("ready", rt.writer, flush=True)

        async def worker(w: int) -> None:
            i = 0
            while True:
                ref = refs[(w * 5 + i) % actors]
                token = f"{prefix}.{w}.{i}"
                await rt.send(ref, Append((token,)))
                sys.stdout.write(f"ack {token}\\n")
                sys.stdout.flush()
                i += 1
                if i % 7 == 0:
                    # Reload now and then, to see (and resolve) what the link brought.
                    rt.forget([ref])
                await asyncio.sleep(0.003)

        await asyncio.gather(*(worker(w) for w in range(workers)))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
"""


@dataclass
class Child:
    """One writer process and the tokens it acknowledged."""

    prefix: str
    proc: asyncio.subprocess.Process
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    writer: str = ""
    acked: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    """Per worker, how many tokens were acknowledged (they are numbered from 0)."""

    @property
    def total(self) -> int:
        return sum(self.acked.values())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if not line.endswith(b"\n"):
                break  # a line cut short by the kill was never a complete acknowledgement
            words = line.decode().split()
            if words[0] == "ready":
                self.writer = words[1]
                self.ready.set()
                continue
            assert words[0] == "ack", line
            prefix, w, i = words[1].split(".")
            assert prefix == self.prefix and int(i) == self.acked[int(w)], line
            self.acked[int(w)] += 1

    async def kill(self) -> None:
        """``kill -9``, then collect every acknowledgement still in the pipe."""
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        assert self.reader is not None
        await self.reader


async def start(tmp_path: Path, db: Path, prefix: str) -> Child:
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    err = (tmp_path / f"{prefix}.err").open("wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            f"sqlite:///{db}",
            prefix,
            str(ACTORS),
            str(WORKERS),
            str(SNAPSHOT_EVERY),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
        )
    finally:
        err.close()
    child = Child(prefix, proc)
    child.reader = asyncio.create_task(child._read())
    waiter = asyncio.create_task(child.ready.wait())
    await asyncio.wait([waiter, child.reader], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if not child.ready.is_set():
        waiter.cancel()
        await child.kill()
        pytest.fail(f"child {prefix} did not start: {(tmp_path / f'{prefix}.err').read_text()}")
    return child


async def linked_for(seconds: float, a: Store, b: Store, children: list[Child]) -> int:
    """Keep the link up for a while; return the records it moved."""
    moved = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        moved += (await sync(a, b)).records
        await asyncio.sleep(0.05)
    for child in children:
        assert child.proc.returncode is None, f"child {child.prefix} died"
    return moved


async def wait_for_acks(child: Child, more: int) -> None:
    target = child.total + more
    until = time.monotonic() + 15
    while child.total < target:
        assert child.proc.returncode is None, f"child {child.prefix} died"
        assert time.monotonic() < until, f"child {child.prefix} too slow"
        await asyncio.sleep(0.02)


async def read_all(url: str) -> list[tuple[Log, VectorClock]]:
    async with Runtime.open(url, [kind]) as rt:
        return [(await rt.state(ref), await rt.clock(ref)) for ref in REFS]


async def test_partition_and_kill_between_processes(tmp_path: Path) -> None:
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    url_a, url_b = f"sqlite:///{db_a}", f"sqlite:///{db_b}"
    children: list[Child] = []
    try:
        a0 = await start(tmp_path, db_a, "A0")
        b0 = await start(tmp_path, db_b, "B0")
        children += [a0, b0]
        store_a = await open_store(url_a)
        store_b = await open_store(url_b)
        try:
            # Linked: both write, the parent copies records both ways.
            await wait_for_acks(a0, 10)
            assert await linked_for(1.0, store_a, store_b, [a0, b0]) > 0

            # Partition: both keep writing; one is killed in the middle of it and restarted.
            await wait_for_acks(a0, 40)
            await wait_for_acks(b0, 40)
            await a0.kill()
            a1 = await start(tmp_path, db_a, "A1")
            children.append(a1)
            assert a1.writer != a0.writer
            await wait_for_acks(a1, 40)
            await wait_for_acks(b0, 20)

            # Restored: everything written meanwhile flows both ways, while they go on.
            assert await linked_for(1.0, store_a, store_b, [a1, b0]) > 0
            await wait_for_acks(a1, 10)
            await wait_for_acks(b0, 10)
            for child in (a1, b0):
                await child.kill()

            for _ in range(10):
                if not (await sync(store_a, store_b)).records:
                    break
            else:
                pytest.fail("replication did not quiesce")
        finally:
            await store_a.aclose()
            await store_b.aclose()
    finally:
        for child in children:
            await child.kill()

    views = [await read_all(url_a), await read_all(url_b)]
    assert views[0] == views[1], "the replicas disagree"
    tokens: list[str] = []
    for ref, (state, clock) in zip(REFS, views[0], strict=True):
        assert not duplicates(state.tokens), (ref, duplicates(state.tokens))
        assert clock.get(a0.writer) and clock.get(a1.writer) and clock.get(b0.writer), clock
        tokens.extend(state.tokens)
        # Each worker sends one command at a time, so its tokens replay in the order sent.
        sent: dict[tuple[str, str], list[int]] = defaultdict(list)
        for token in state.tokens:
            prefix, worker, i = token.split(".")
            sent[(prefix, worker)].append(int(i))
        for key, order in sent.items():
            assert order == sorted(order), (ref, key, order)
    assert not duplicates(tokens), duplicates(tokens)
    # The partition really made siblings: merges healed them (the merge hook counts them).
    assert sum(state.merges for state, _ in views[0]) > 0, "no actor ever had siblings"

    # Every acknowledged token is there; beyond them, at most the one message per worker
    # that was under way when its process was killed.
    applied: dict[tuple[str, int], set[int]] = defaultdict(set)
    for token in tokens:
        prefix, worker, i = token.split(".")
        applied[(prefix, int(worker))].add(int(i))
    for child in children:
        for w in range(WORKERS):
            n = child.acked[w]
            got = applied.pop((child.prefix, w), set())
            assert got in (set(range(n)), set(range(n + 1))), (child.prefix, w, n, sorted(got))
    assert not applied, f"tokens nobody sent: {sorted(applied)}"

    # Resolving ran on both sides and wrote the same snapshots: once more changes nothing.
    store_a = await open_store(url_a)
    store_b = await open_store(url_b)
    try:
        await sync(store_a, store_b)
        for ref in REFS:
            assert len(await store_a.heads(ref)) == len(await store_b.heads(ref)) == 1, ref
    finally:
        await store_a.aclose()
        await store_b.aclose()
    assert await read_all(url_a) == await read_all(url_b) == views[0]

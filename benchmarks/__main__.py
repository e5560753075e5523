"""``make bench``: Sourcery's figures next to the raw store's, measured in the same run.

Prints a table and writes every figure to ``bench-results.json`` (one flat object,
figure name -> number) so that runs can be compared. Nothing here asserts a target: this
machine is shared and noisy, so the figures are for people to read.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sourcery import ActorRef, Runtime
from sourcery._core.ids import IdGenerator, id_to_bytes
from sourcery._stores.sql.schema import statements
from sourcery._stores.sqlite import DIALECT
from sourcery.examples.bank import Deposit, accounts

from .broker import bench_broker
from .divergence import bench_resolution, paths
from .projections import bench_postgres_projection, bench_projection
from .services import POSTGRES, bench_cache, bench_postgres
from .workloads import Add, tally

Results = dict[str, float]


def _fresh(directory: Path, name: str) -> str:
    path = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return str(path)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_commands(directory: Path, actors: int, commands: int) -> Results:
    """``actors`` clients, one per actor, each sending its share of commands in turn."""
    path = _fresh(directory, "commands.db")
    refs = [accounts(f"acct-{i}") for i in range(actors)]
    per_actor = commands // actors
    latencies: list[float] = []
    async with Runtime.open(f"sqlite:///{path}", [accounts]) as rt:

        async def client(ref: ActorRef) -> None:
            clock = time.perf_counter
            record = latencies.append
            for _ in range(per_actor):
                start = clock()
                await rt.send(ref, Deposit(1))
                record(clock() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client(ref) for ref in refs))
        elapsed = time.perf_counter() - start
        transactions = rt.store.stats.transactions
    sent = per_actor * actors
    return {
        "sqlite_commands": sent,
        "sqlite_commands_per_s": sent / elapsed,
        "sqlite_latency_p50_ms": _percentile(latencies, 0.50) * 1000,
        "sqlite_latency_p99_ms": _percentile(latencies, 0.99) * 1000,
        "sqlite_mean_batch": sent / max(transactions, 1),
    }


def bench_raw_sqlite(directory: Path, rows: int, batch: int) -> Results:
    """The same event rows inserted with plain ``executemany``, ``batch`` per transaction,
    on the same schema and durability settings: the ceiling for the embedded store."""
    path = _fresh(directory, "raw.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    for statement in statements(DIALECT, 1):
        con.execute(statement)
    ids = IdGenerator()
    payload = b"\x81\xa6amount\x01"
    data = [
        (
            "account",
            f"acct-{i % 1000}",
            "raw-writer",
            i // 1000 + 1,
            id_to_bytes(ids.new()),
            int(time.time() * 1000),
            f"m-{i}",
            "Deposited",
            1,
            payload,
        )
        for i in range(rows)
    ]
    sql = (
        "INSERT INTO events (actor_type, actor_id, writer, n, id, timestamp, initiated_by,"
        " type, version, payload) VALUES (?,?,?,?,?,?,?,?,?,?)"
    )
    start = time.perf_counter()
    for offset in range(0, rows, batch):
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, data[offset : offset + batch])
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return {"sqlite_raw_inserts_per_s": rows / elapsed}


async def bench_load(directory: Path, events: int) -> Results:
    """Cold load of one actor with ``events`` events, with and without snapshots."""
    results: Results = {}
    for label, every in (("with_snapshots", 100), ("without_snapshots", 10**9)):
        path = _fresh(directory, f"load-{label}.db")
        kind = tally(every)
        ref = kind("big")
        url = f"sqlite:///{path}"
        async with Runtime.open(url, [kind]) as rt:
            for _ in range(events // 1000):
                await rt.send(ref, Add(1000))
            for _ in range(50):  # some loose events after the last snapshot
                await rt.send(ref, Add(1))
        async with Runtime.open(url, [kind]) as rt:
            start = time.perf_counter()
            state = await rt.state(ref)
            elapsed = time.perf_counter() - start
            read = rt.store.stats.events_read
        assert state.total == events // 1000 * 1000 + 50
        results[f"load_{label}_ms"] = elapsed * 1000
        results[f"load_{label}_events_read"] = read
    return results


def bench_ids(count: int) -> Results:
    gen = IdGenerator()
    new = gen.new
    start = time.perf_counter()
    for _ in range(count):
        new()
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    gen.new_many(count)
    bulk = time.perf_counter() - start
    return {"ids_per_s": count / elapsed, "ids_bulk_per_s": count / bulk}


def bench_memory(directory: Path, actors: int) -> Results:
    """Peak memory of a fresh process touching ``actors`` actors once each."""
    path = _fresh(directory, "memory.db")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", path, str(actors)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    figures: Results = json.loads(out.stdout)
    return figures


def _divergence_args(
    directory: Path, history: int, sizes: tuple[int, ...]
) -> tuple[str, int, tuple[int, ...], str]:
    url, replica = paths(directory)
    for name in ("history.db", "replica.db"):
        _fresh(directory, name)
    return url, history, sizes, replica


def _run(results: Results, name: str, fn: Callable[[], Results]) -> None:
    # Every phase starts on a quiet machine: the previous one's garbage collected and its
    # dirty pages written out, so that no phase pays for another's writes.
    gc.collect()
    os.sync()
    time.sleep(1)
    print(f"… {name}", file=sys.stderr, flush=True)
    results.update(fn())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--load-events", type=int, default=100_000)
    parser.add_argument("--memory-actors", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--branches", default="1000,10000,100000")
    parser.add_argument("--postgres-commands", type=int, default=20_000)
    parser.add_argument("--projection-events", type=int, default=100_000)
    parser.add_argument(
        "--broker-commands", type=int, default=5_000, help="per round, raw and end to end"
    )
    parser.add_argument("--broker-rounds", type=int, default=8)
    parser.add_argument(
        "--skip-services", action="store_true", help="only the embedded figures (no servers)"
    )
    parser.add_argument(
        "--only",
        choices=("embedded", "services", "broker"),
        help="run one part: the embedded figures, every server's, or RabbitMQ's alone",
    )
    parser.add_argument("--output", default="bench-results.json")
    args = parser.parse_args()
    embedded = args.only in (None, "embedded")
    services = not args.skip_services and args.only in (None, "services", "broker")
    stores = args.only != "broker"

    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="sourcery-bench-") as tmp:
        directory = Path(tmp)
        if embedded:
            _embedded(results, directory, args)
    if services:
        if stores:
            _run(
                results,
                "postgres",
                lambda: asyncio.run(bench_postgres(args.actors, args.postgres_commands)),
            )
            _run(results, "cache", lambda: asyncio.run(bench_cache(200)))
            _run(
                results,
                "projection on postgres",
                lambda: asyncio.run(bench_postgres_projection(POSTGRES, args.projection_events)),
            )
        _run(
            results,
            f"rabbitmq: raw and workers in alternation, {args.broker_rounds} rounds",
            lambda: asyncio.run(
                bench_broker(args.actors, args.broker_commands, args.broker_rounds)
            ),
        )
    if embedded:
        results["sqlite_ratio_to_raw"] = (
            results["sqlite_commands_per_s"] / results["sqlite_raw_inserts_per_s"]
        )
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"
        print(f"{key:<{width}}  {shown:>16}")
    Path(args.output).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(
        f"written to {args.output} (one run on {os.cpu_count()} cores; compare runs, not a target)"
    )
    return 0


def _embedded(results: Results, directory: Path, args: argparse.Namespace) -> None:
    _run(
        results,
        "commands",
        lambda: asyncio.run(bench_commands(directory, args.actors, args.commands)),
    )
    _run(results, "raw sqlite", lambda: bench_raw_sqlite(directory, args.commands, 1000))
    _run(results, "ids", lambda: bench_ids(1_000_000))
    _run(results, "load", lambda: asyncio.run(bench_load(directory, args.load_events)))
    _run(results, "memory", lambda: bench_memory(directory, args.memory_actors))
    _run(
        results,
        "projection on sqlite",
        lambda: asyncio.run(
            bench_projection(
                f"sqlite:///{_fresh(directory, 'projection.db')}", "sqlite", args.projection_events
            )
        ),
    )
    sizes = tuple(int(size) for size in args.branches.split(","))
    _run(
        results,
        "resolution and replication",
        lambda: asyncio.run(bench_resolution(*_divergence_args(directory, args.history, sizes))),
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""RabbitMQ figures: the raw broker rate, and commands/s through ``sourcery worker``
processes, measured in the same run on the same topology.

The raw figure is the ceiling for the service deployment: the same messages (command
envelopes of the bank example), published persistent with publisher confirms to the
actor's queue (chosen as the client chooses it) among durable quorum queues with a single
active consumer each,
consumed with a prefetch and acknowledged one by one, by as many consumer processes as
the end-to-end run has workers, while as many senders publish concurrently as it has.

Run as ``python -m benchmarks.broker consume URL PART PARTS`` it is one such consumer
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sourcery._core.config import AmqpSettings, parse_amqp_url
from sourcery._core.ids import format_id, new_id
from sourcery._core.records import ActorRef
from sourcery._messaging.queues.base import queue_index
from sourcery._messaging.wire import encode_command
from sourcery.examples.bank import Deposit, Open, accounts

Results = dict[str, float]

AMQP = os.environ.get("SOURCERY_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
WORKERS = 2
"""Worker processes in the end-to-end run, and so consumer processes in the raw one."""
_ROOT = Path(__file__).resolve().parent.parent


def _settings(prefix: str) -> AmqpSettings:
    return parse_amqp_url(f"{AMQP}?prefix={prefix}")


def workload(actors: int, commands: int) -> list[list[tuple[ActorRef, object]]]:
    """Per actor, in order: Open, then Deposits; ``commands`` in all (rounded down)."""
    per_actor = max(commands // actors, 1)
    plan: list[list[tuple[ActorRef, object]]] = []
    for i in range(actors):
        ref = accounts(f"acct-{i}")
        plan.append([(ref, Open(f"owner-{i}"))] + [(ref, Deposit(1))] * (per_actor - 1))
    return plan


# --- raw broker -------------------------------------------------------------------------


async def _declare(settings: AmqpSettings) -> None:
    """The workers' command topology, declared by the code that declares it for them."""
    from sourcery._messaging.queues import open_queue

    queue = await open_queue(f"{AMQP}?prefix={settings.prefix}")
    await queue.aclose()


async def delete_names(settings: AmqpSettings) -> None:
    """Every queue and exchange a benchmark run made under its prefix."""
    import aio_pika

    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        for index in range(settings.queues):
            await channel.queue_delete(settings.command_queue(index))
        await channel.queue_delete(settings.dead_letter_queue)
        for name in (
            f"{settings.prefix}.dead",
            settings.events_exchange,
        ):
            await channel.exchange_delete(name)


async def consume(url: str, part: int = 0, parts: int = 1) -> None:
    """One raw consumer process: the command queues ``i`` with ``i % parts == part`` (the
    workers share the queues, so the raw consumers split them too), ack each message;
    report on stdout ``ready`` once consuming, then ``<acked> <monotonic time of the last
    ack>`` lines."""
    import aio_pika

    settings = parse_amqp_url(url)
    acked = 0
    last = 0.0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked, last
        await message.ack()
        acked += 1
        last = time.monotonic()

    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.prefetch)
        for index in range(part, settings.queues, parts):
            queue = await channel.get_queue(settings.command_queue(index), ensure=False)
            await queue.consume(on_message)
        print("ready", flush=True)
        shown = -1
        while True:
            await asyncio.sleep(0.02)
            if acked != shown:
                shown = acked
                print(f"{acked} {last}", flush=True)


@dataclass
class _Consumers:
    """Raw consumer processes and what they last reported."""

    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    total: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, url: str, count: int) -> None:
        for part in range(count):
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.broker",
                    "consume",
                    url,
                    str(part),
                    str(count),
                    stdout=asyncio.subprocess.PIPE,
                    cwd=_ROOT,
                )
            )
            self.acked.append(0)
            self.last.append(0.0)
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"a raw consumer did not start: {line!r}")

    async def follow(self, index: int) -> None:
        stdout = self.processes[index].stdout
        assert stdout is not None
        async for line in stdout:
            acked, last = line.split()
            self.acked[index], self.last[index] = int(acked), float(last)
            if sum(self.acked) >= self.total:
                self.done.set()

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            await process.wait()


class _RawSide:
    """The raw side, set up once and then run in bursts: the workers' command topology,
    ``consumers`` consumer processes and one confirming publisher."""

    def __init__(self, consumers: int) -> None:
        self.settings = _settings(f"bench-{uuid.uuid4().hex[:8]}")
        self.consumers = consumers
        self.group = _Consumers()
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        import aio_pika

        self.stack.push_async_callback(delete_names, self.settings)
        await _declare(self.settings)
        self.stack.push_async_callback(self.group.stop)
        await self.group.start(f"{AMQP}?prefix={self.settings.prefix}", self.consumers)
        followers = [asyncio.create_task(self.group.follow(i)) for i in range(self.consumers)]
        self.stack.callback(lambda: [task.cancel() for task in followers])
        connection = await aio_pika.connect(self.settings.url)
        self.stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=True)
        self.exchange = channel.default_exchange

    async def burst(self, plan: Sequence[Sequence[tuple[ActorRef, object]]]) -> Results:
        """Messages fully through the broker per second: published, confirmed, consumed
        and acknowledged, one concurrent sender per actor (each message after the previous
        one's confirm)."""
        import aio_pika

        settings = self.settings
        bodies = []
        for messages in plan:
            own = []
            for ref, command in messages:
                message_id = format_id(new_id())
                key = settings.command_queue(queue_index(f"{ref.type}/{ref.id}", settings.queues))
                own.append((key, message_id, encode_command(ref, command, message_id)))
            bodies.append(own)
        total = sum(len(messages) for messages in bodies)
        group = self.group
        before = list(group.acked)
        group.done.clear()
        group.total += total

        async def sender(messages: Sequence[tuple[str, str, bytes]]) -> None:
            for key, message_id, body in messages:
                await self.exchange.publish(
                    aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message_id,
                    ),
                    routing_key=key,
                )

        start = time.monotonic()
        await asyncio.gather(*(sender(messages) for messages in bodies))
        published = time.monotonic() - start
        await asyncio.wait_for(group.done.wait(), 120)
        through = max(group.last) - start
        shares = [after - was for after, was in zip(group.acked, before, strict=True)]
        return {
            "rabbitmq_raw_messages": total,
            "rabbitmq_raw_message_bytes": len(bodies[0][-1][2]),
            "rabbitmq_raw_publish_per_s": total / published,
            "rabbitmq_raw_per_s": total / through,
            "rabbitmq_raw_busiest_consumer_share": max(shares) / total,
        }


# --- end to end ------------------------------------------------------------------------


async def _consumers(settings: AmqpSettings) -> list[int]:
    """The consumers each command queue reports (only the active one, with a single
    active consumer)."""
    import aio_pika

    counts: list[int] = []
    connection = await aio_pika.connect(settings.url)
    async with connection:
        channel = await connection.channel()
        for index in range(settings.queues):
            queue = await channel.declare_queue(settings.command_queue(index), passive=True)
            result = queue.declaration_result
            counts.append(result.consumer_count or 0)
    return counts


async def _start_workers(
    store: str, broker: str, settings: AmqpSettings, count: int
) -> list[asyncio.subprocess.Process]:
    """``count`` ``sourcery worker`` processes, all started before any is waited for (so
    which one becomes the active consumer of each queue is up to the broker), returned
    once each said it runs and every queue has a consumer."""
    executable = Path(sys.executable).with_name("sourcery")
    processes = [
        await asyncio.create_subprocess_exec(
            str(executable),
            "worker",
            "sourcery.examples.bank:accounts",
            "--store",
            store,
            "--broker",
            broker,
            "--name",
            f"bench{i}",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "1000"},
            cwd=_ROOT,
        )
        for i in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"worker "):
            raise RuntimeError(f"a worker did not start: {line!r}")
    # A queue with a single active consumer reports only that one: wait until every queue
    # has it, then give the other workers' (waiting) consumers a moment to register too.
    try:
        async with asyncio.timeout(30):
            while min(await _consumers(settings)) < 1:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise RuntimeError("the workers did not consume every queue within 30 s") from None
    await asyncio.sleep(1)
    return processes


async def _stop(processes: Sequence[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


class _WorkerSide:
    """The end-to-end side, set up once and then run in bursts: ``workers`` ``sourcery
    worker`` processes on PostgreSQL and one client."""

    def __init__(self, workers: int) -> None:
        from .services import POSTGRES

        self.settings = _settings(f"bench-{uuid.uuid4().hex[:8]}")
        self.broker = f"{AMQP}?prefix={self.settings.prefix}"
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.store = f"{POSTGRES}?schema={self.schema}&pool_size=4"
        self.workers = workers
        self.processes: list[asyncio.subprocess.Process] = []
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        from sourcery._messaging.client import Client

        from .services import _drop

        self.stack.push_async_callback(_drop, self.schema)
        self.stack.push_async_callback(self._delete_names)
        self.stack.push_async_callback(_stop, self.processes)
        self.processes += await _start_workers(self.store, self.broker, self.settings, self.workers)
        for profiler in await _profile(self.processes):
            self.stack.push_async_callback(_interrupt, profiler)
        self.client = await self.stack.enter_async_context(Client.open(self.broker))

    async def _delete_names(self) -> None:
        async with asyncio.timeout(60):
            await delete_names(self.settings)

    async def burst(self, plan: Sequence[Sequence[tuple[ActorRef, object]]]) -> Results:
        """Commands/s: one concurrent sender per actor (each command after the previous
        one's confirm); every actor's last command is a request, whose reply (commands of
        one actor are processed in order) says that all of that actor's commands are
        done."""
        client = self.client

        async def sender(messages: Sequence[tuple[ActorRef, object]]) -> None:
            *rest, (ref, last) = messages
            for actor, command in rest:
                await client.send(actor, command)
            await client.request(ref, last, timeout=120)

        total = sum(len(messages) for messages in plan)
        cpu_before = sum(_cpu_seconds(p.pid) for p in self.processes)
        start = time.monotonic()
        await asyncio.gather(*(sender(messages) for messages in plan))
        elapsed = time.monotonic() - start
        cpu = sum(_cpu_seconds(p.pid) for p in self.processes) - cpu_before
        return {
            "rabbitmq_commands": total,
            "rabbitmq_commands_per_s": total / elapsed,
            # CPU the workers spent per command (user + system): less noisy than the rate
            # on a shared machine, and what a change to the worker's path shows first.
            "rabbitmq_worker_cpu_ms_per_command": cpu * 1000 / total,
        }

    async def written(self) -> Results:
        """The events the workers wrote, and the busiest one's share of them."""
        import asyncpg

        from .services import POSTGRES

        con = await asyncpg.connect(POSTGRES)
        try:
            rows = await con.fetch(
                f'SELECT writer, count(*) AS n FROM "{self.schema}".events GROUP BY writer'
            )
        finally:
            await con.close()
        written = sum(row["n"] for row in rows)
        return {
            "rabbitmq_events_written": written,
            "rabbitmq_busiest_worker_share": max((row["n"] for row in rows), default=0)
            / max(written, 1),
        }


async def _interrupt(profiler: asyncio.subprocess.Process) -> None:
    profiler.send_signal(signal.SIGINT)
    await profiler.wait()


async def bench_broker(actors: int, commands: int, rounds: int, workers: int = WORKERS) -> Results:
    """The raw broker rate and commands/s through the workers, measured in alternation:
    ``rounds`` bursts of ``commands`` each (Deposits to ``actors`` accounts, opened
    beforehand), raw then end to end, on both sides' processes started once, so that
    both see the same load on a shared machine and no round pays for a start."""
    plan = [[(ref, Deposit(1)) for ref, _ in messages] for messages in workload(actors, commands)]
    opening = [[(accounts(f"acct-{i}"), Open(f"owner-{i}"))] for i in range(actors)]
    raw = _RawSide(workers)
    e2e = _WorkerSide(workers)
    pairs: list[tuple[Results, Results]] = []
    async with raw.stack, e2e.stack:
        await raw.start()
        await e2e.start()
        await raw.burst(opening)  # warm-up, not counted
        await e2e.burst(opening)
        for _ in range(rounds):
            await _settle()
            measured = await raw.burst(plan)
            await _settle()
            pairs.append((measured, await e2e.burst(plan)))
        written = await e2e.written()
    written["rabbitmq_events_written"] -= actors  # the Opens
    return {**summary(pairs), **written}


async def _settle() -> None:
    """The previous burst's garbage collected and its dirty pages written out, so that no
    burst pays for another's writes."""
    gc.collect()
    await asyncio.to_thread(os.sync)
    await asyncio.sleep(0.5)


def summary(rounds: Sequence[tuple[Results, Results]]) -> Results:
    """The figures of ``rounds`` pairs (raw, then end to end right after it): the median of
    each rate and the ratio of the medians, each round's pair and its ratio, and totals of
    the counts. Raw and end-to-end measured in alternation see the same load on a shared
    machine, which one pair measured once does not."""
    raw = [r for r, _ in rounds]
    e2e = [w for _, w in rounds]
    results: Results = {"rabbitmq_rounds": len(rounds)}
    for key in (
        "rabbitmq_raw_publish_per_s",
        "rabbitmq_raw_per_s",
        "rabbitmq_raw_busiest_consumer_share",
    ):
        results[key] = statistics.median(r[key] for r in raw)
    for key in ("rabbitmq_commands_per_s", "rabbitmq_worker_cpu_ms_per_command"):
        results[key] = statistics.median(w[key] for w in e2e)
    results["rabbitmq_ratio_to_raw"] = (
        results["rabbitmq_commands_per_s"] / results["rabbitmq_raw_per_s"]
    )
    results["rabbitmq_raw_messages"] = sum(r["rabbitmq_raw_messages"] for r in raw)
    results["rabbitmq_raw_message_bytes"] = raw[0]["rabbitmq_raw_message_bytes"]
    results["rabbitmq_commands"] = sum(w["rabbitmq_commands"] for w in e2e)
    for i, (r, w) in enumerate(rounds, 1):
        results[f"rabbitmq_round{i}_raw_per_s"] = r["rabbitmq_raw_per_s"]
        results[f"rabbitmq_round{i}_commands_per_s"] = w["rabbitmq_commands_per_s"]
        results[f"rabbitmq_round{i}_ratio_to_raw"] = (
            w["rabbitmq_commands_per_s"] / r["rabbitmq_raw_per_s"]
        )
        results[f"rabbitmq_round{i}_worker_cpu_ms_per_command"] = w[
            "rabbitmq_worker_cpu_ms_per_command"
        ]
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _profile(
    processes: Sequence[asyncio.subprocess.Process],
) -> list[asyncio.subprocess.Process]:
    """With ``SOURCERY_BENCH_PROFILE=DIR``, a py-spy profile of each worker during the run,
    written as ``DIR/worker<i>.txt`` (collapsed stacks) when it ends."""
    directory = os.environ.get("SOURCERY_BENCH_PROFILE")
    if not directory:
        return []
    executable = Path(sys.executable).with_name("py-spy")
    return [
        await asyncio.create_subprocess_exec(
            str(executable),
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "-o",
            str(Path(directory) / f"worker{i}.txt"),
            "-p",
            str(process.pid),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for i, process in enumerate(processes)
    ]


def main(argv: Sequence[str]) -> int:
    if len(argv) in (2, 4) and argv[0] == "consume":
        part, parts = (int(argv[2]), int(argv[3])) if len(argv) == 4 else (0, 1)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(consume(argv[1], part, parts))
        return 0
    print("usage: python -m benchmarks.broker consume AMQP_URL [PART PARTS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

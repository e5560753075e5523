"""Settling a delivery as the worker's verdict on its command says: exactly once, with the
reply to its sender (see :mod:`sourcery._messaging.worker` for what each verdict means)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sourcery._core.actor import Outcome
from sourcery._core.records import ActorRef
from sourcery._messaging.queues import CommandQueue, Delivery
from sourcery._messaging.wire import Reply, Status, encode_reply

if TYPE_CHECKING:
    from sourcery._messaging.worker import WorkerStats

__all__ = ["ABANDONED", "RETRY", "Settlement", "Verdict"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Verdict:
    """How to settle a delivery, and what to reply."""

    settle: Literal["ack", "retry", "dead", "none"]
    message_id: str = ""
    actor: ActorRef | None = None
    status: Status | None = None
    """The reply's status; None: no reply."""
    exc: BaseException | None = None
    outcome: Outcome[Any, Any] | None = None
    failures: int = 0
    """The command's failures so far (for a dead letter)."""


RETRY = Verdict("retry")
ABANDONED = Verdict("none")


class Settlement:
    """Carries out a worker's verdicts on the deliveries of ``queue``."""

    def __init__(self, queue: CommandQueue, stats: WorkerStats, failures: dict[str, int]) -> None:
        self._queue = queue
        self._stats = stats
        self._failures = failures
        """The worker's count of each command's failures: a dead-lettered one is forgotten."""

    async def settle(self, delivery: Delivery, verdict: Verdict) -> None:
        """Settle ``delivery`` exactly once as ``verdict`` says, and reply.

        Nothing after a settle can cause a second one: a failing reply is only logged, and
        so is a failing settle (a delivery whose channel is gone comes back by itself).
        """
        try:
            if verdict.settle == "none":
                return
            if verdict.settle == "ack":
                await self._reply(delivery, verdict)  # first: the sender hears at once
                await delivery.ack()
            elif verdict.settle == "retry":
                await delivery.retry()
            elif await self._dead(delivery, verdict):
                await self._reply(delivery, verdict)  # after: the dead letter is there
        except Exception:
            log.exception(
                "could not settle command %s (%s)",
                verdict.message_id or delivery.message_id or "(no id)",
                verdict.settle,
            )

    async def _dead(self, delivery: Delivery, verdict: Verdict) -> bool:
        """Dead-letter it; if the dead letter cannot be written, retry it instead (its
        failures stay counted, so it goes to the dead letters on its next failure)."""
        exc = verdict.exc
        error_type, error = type(exc).__name__, str(exc) or repr(exc)
        message_id = verdict.message_id or "(no id)"
        log.warning(
            "command %s to %s goes to the dead letters after %d failure(s): %s: %s",
            message_id,
            verdict.actor or "(unknown actor)",
            verdict.failures,
            error_type,
            error,
        )
        try:
            await delivery.dead(error_type, error, attempts=verdict.failures)
        except Exception:
            log.exception(
                "could not dead-letter command %s; it will be delivered again", message_id
            )
            self._stats.retried += 1
            await delivery.retry()
            return False
        self._failures.pop(verdict.message_id, None)
        self._stats.dead += 1
        return True

    async def _reply(self, delivery: Delivery, verdict: Verdict) -> None:
        """Answer the sender, if it waits; a reply that cannot be sent is only logged (the
        sender times out, as for any lost reply)."""
        reply_to, message_id, actor, exc = (
            delivery.reply_to,
            verdict.message_id,
            verdict.actor,
            verdict.exc,
        )
        if not reply_to or not message_id or verdict.status is None:
            return
        outcome = verdict.outcome
        try:
            reply = Reply(
                message_id=message_id,
                actor_type=actor.type if actor else "",
                actor_id=actor.id if actor else "",
                status=verdict.status,
                events=tuple(e.type for e in outcome.events) if outcome else (),
                error_type=type(exc).__name__ if exc else "",
                error=(str(exc) or repr(exc)) if exc else "",
            )
            await self._queue.reply(reply_to, encode_reply(reply), correlation_id=message_id)
        except Exception:
            log.exception("could not reply to command %s", message_id)

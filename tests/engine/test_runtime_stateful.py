"""A state machine against the runtime: sends, reopens and reads keep matching a plain model."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sourcery import Rejected, Runtime
from sourcery.examples import bank
from sourcery.examples.bank import Account, Deposit, Withdraw

ACTORS = 3


class RuntimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="sourcery-stateful-"))
        self.path = self.dir / "s.db"
        self.url = f"sqlite:///{self.path}"
        self.kind = dataclasses.replace(bank.accounts, snapshot_every=3)
        self.refs = [self.kind(f"acct-{k}") for k in range(ACTORS)]
        self.balances = [0] * ACTORS
        self.accepted = 0
        self.sent: dict[str, tuple[int, Deposit | Withdraw, bool]] = {}
        self.runtime: Runtime | None = self.loop.run_until_complete(self._open())

    async def _open(self) -> Runtime:
        return await Runtime.open(self.url, [self.kind], max_actors=2)

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def _send(self, k: int, command: Deposit | Withdraw, message_id: str) -> bool:
        try:
            out = self.loop.run_until_complete(
                self.rt.send(self.refs[k], command, message_id=message_id)
            )
        except Rejected:
            return False
        assert not out.duplicate
        return True

    @rule(
        k=st.integers(0, ACTORS - 1),
        amount=st.integers(-1, 50),
        deposit=st.booleans(),
    )
    def send(self, k: int, amount: int, deposit: bool) -> None:
        command: Deposit | Withdraw = Deposit(amount) if deposit else Withdraw(amount)
        ok = self._send(k, command, f"m{len(self.sent)}")
        expected = amount > 0 and (deposit or amount <= self.balances[k])
        assert ok == expected, (command, self.balances[k])
        if ok:
            self.balances[k] += amount if deposit else -amount
            self.accepted += 1
        self.sent[f"m{len(self.sent)}"] = (k, command, ok)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.sent)))
        k, command, ok = self.sent[message_id]
        try:
            out = self.loop.run_until_complete(
                self.rt.send(self.refs[k], command, message_id=message_id)
            )
        except Rejected:
            # A rejected message was never recorded, so it is decided again.
            assert not ok
            return
        if ok:
            assert out.duplicate
        else:
            # Rejected before, accepted now (the balance grew): a new message after all.
            assert not out.duplicate
            self.sent[message_id] = (k, command, True)
            self.balances[k] += command.amount if isinstance(command, Deposit) else -command.amount
            self.accepted += 1

    @rule()
    def reopen(self) -> None:
        self.loop.run_until_complete(self.rt.aclose())
        self.runtime = None
        self.runtime = self.loop.run_until_complete(self._open())

    @rule(k=st.integers(0, ACTORS - 1), refresh=st.booleans())
    def read(self, k: int, refresh: bool) -> None:
        state = self.loop.run_until_complete(self.rt.state(self.refs[k], refresh=refresh))
        assert state == Account(balance=self.balances[k])

    @invariant()
    def states_match_the_model(self) -> None:
        for k, ref in enumerate(self.refs):
            state = self.loop.run_until_complete(self.rt.state(ref))
            assert state == Account(balance=self.balances[k]), k
        assert self.rt.actors_in_memory <= 2

    @invariant()
    def stored_events_match_the_model(self) -> None:
        con = sqlite3.connect(self.path)
        try:
            (stored,) = con.execute("SELECT count(*) FROM events").fetchone()
        finally:
            con.close()
        assert stored == self.accepted

    def teardown(self) -> None:
        try:
            if self.runtime is not None:
                self.loop.run_until_complete(self.runtime.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestRuntimeMachine = RuntimeMachine.TestCase
TestRuntimeMachine.settings = settings(max_examples=30, stateful_step_count=30)

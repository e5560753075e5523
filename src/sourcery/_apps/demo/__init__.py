"""The demo workloads: many bank accounts, many concurrent commands, then an audit.

:func:`run_replicated_demo` is the showcase: two replicas (two stores, a runtime on each)
that are partitioned while both keep accepting deposits and withdrawals, then healed. Their
accounts diverge, the next reads resolve every divergence deterministically (recording an
``Overdrawn`` event where the two sides' withdrawals together overdrew an account), and
the audit checks that no money appeared or vanished and that both replicas agree on every
account's state and vector clock.

:func:`run_demo` is the single-store workload: it opens every account, sends random
deposits and withdrawals from ``concurrency`` tasks at once (withdrawals larger than the
balance are rejected, as they should be), closes the runtime, reopens the store with a new
writer and checks that the sum of the balances read back equals what was deposited minus
what was withdrawn.

The modules, by job: :mod:`.workload` (accounts, commands, the tasks that send them),
:mod:`.single` and :mod:`.replicated` (the runs, phase by phase), :mod:`.audit` (what the
stores hold afterwards), :mod:`.results` (what a run reports).
"""

from __future__ import annotations

from sourcery._apps.demo.audit import actor_history_svg
from sourcery._apps.demo.replicated import run_replicated_demo
from sourcery._apps.demo.results import DemoResult, PhaseDone, ReplicatedDemoResult, Side
from sourcery._apps.demo.single import run_demo
from sourcery._apps.demo.workload import DEFAULT_SNAPSHOT_EVERY, account_id

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "DemoResult",
    "PhaseDone",
    "ReplicatedDemoResult",
    "Side",
    "account_id",
    "actor_history_svg",
    "run_demo",
    "run_replicated_demo",
]

"""The group committer: shared transactions, and how failures reach each caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sourcery._core.errors import StoreError, StoreUnavailable
from sourcery._core.records import CommitBatch
from sourcery._stores.groupcommit import GroupCommitter


async def test_concurrent_batches_share_one_flush() -> None:
    flushed: list[int] = []

    async def flush(batches: Sequence[CommitBatch]) -> None:
        await asyncio.sleep(0)
        flushed.append(len(batches))

    committer = GroupCommitter(flush)
    await asyncio.gather(*(committer.commit(CommitBatch()) for _ in range(10)))
    assert sum(flushed) == 10 and len(flushed) < 10


async def test_a_conflict_fails_only_its_own_batch() -> None:
    bad = CommitBatch()
    calls: list[int] = []

    async def flush(batches: Sequence[CommitBatch]) -> None:
        calls.append(len(batches))
        if any(b is bad for b in batches):
            raise StoreError("conflict")

    committer = GroupCommitter(flush)
    good = [committer.commit(CommitBatch()) for _ in range(4)]
    failed = committer.commit(bad)
    await asyncio.gather(*good)
    with pytest.raises(StoreError, match="conflict"):
        await failed
    assert calls[0] == 5 and len(calls) == 6  # the group, then each batch alone


async def test_an_unavailable_store_fails_everybody_at_once() -> None:
    calls: list[int] = []

    async def flush(batches: Sequence[CommitBatch]) -> None:
        calls.append(len(batches))
        raise StoreUnavailable("gone")

    committer = GroupCommitter(flush)
    results = await asyncio.gather(
        *(committer.commit(CommitBatch()) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert calls == [10]  # no batch retried alone behind the others

"""Regression: a merge whose common ancestor is the root must not evolve the actor type's
shared ``initial`` object (it did, so every new actor started with the merged items)."""

from __future__ import annotations

from typing import Any

import msgspec

from sourcery import ActorType, Runtime, open_store
from sourcery.replication import sync


class Add(msgspec.Struct, frozen=True):
    item: str


class Added(msgspec.Struct, frozen=True):
    item: str


def decide(state: dict[str, Any], command: Add) -> list[Added]:
    return [Added(command.item)]


def evolve(state: dict[str, Any], event: Added) -> dict[str, Any]:
    state.setdefault("items", []).append(event.item)  # in place, on purpose
    return state


def bag_type() -> ActorType[dict[str, Any], Add, Added]:
    return ActorType(
        name="bag",
        initial={},
        decide=decide,
        evolve=evolve,
        commands=[Add],
        events=[Added],
        snapshot_every=1,  # each replica snapshots, so the heads' common ancestor is the root
    )


async def test_a_merge_from_the_root_leaves_the_initial_state_alone() -> None:
    bags = bag_type()
    east = await open_store("sqlite://:memory:")
    west = await open_store("sqlite://:memory:")
    rt_east, rt_west = Runtime(east, [bags]), Runtime(west, [bags])
    await east.register_writer(rt_east.writer)
    await west.register_writer(rt_west.writer)
    try:
        await rt_east.send(bags("x"), Add("from-east"))
        await rt_west.send(bags("x"), Add("from-west"))
        await sync(east, west, touched_a=rt_east.forget, touched_b=rt_west.forget)

        merged = await rt_east.state(bags("x"))
        assert sorted(merged["items"]) == ["from-east", "from-west"]
        assert rt_east.resolutions.divergences == 1

        assert bags.initial == {}
        assert await rt_east.state(bags("y")) == {}
        assert await rt_west.state(bags("y")) == {}
    finally:
        for rt in (rt_east, rt_west):
            await rt.aclose()
        await east.aclose()
        await west.aclose()


async def test_a_fresh_actor_after_another_was_loaded_starts_from_initial() -> None:
    bags = bag_type()
    async with Runtime.open("sqlite://:memory:", [bags]) as rt:
        await rt.send(bags("x"), Add("one"))
        assert await rt.state(bags("y")) == {}
        assert bags.initial == {}

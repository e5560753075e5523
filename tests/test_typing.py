"""The README's code type-checks under ``mypy --strict`` as written, and the API carries
the actor's types through: ``await rt.state(ref)`` is the state type, ``send`` returns an
``Outcome`` of the state and event types, and a command of another actor type is an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api
from test_readme import DOCS, README, ROOT, python_blocks

USES = """
from typing import assert_type

from sourcery import Client, Outcome


async def typed_use() -> None:
    async with Runtime.open("sqlite://:memory:", [accounts]) as rt:
        ref = accounts("typed")
        assert_type(await rt.state(ref), Account)
        outcome = await rt.send(ref, Deposit(1))
        assert_type(outcome, Outcome[Account, Deposited | Withdrew])
        assert_type(outcome.state, Account)
        assert_type(outcome.events[0].payload, Deposited | Withdrew)
    async with Client.open("memory://") as client:
        assert_type(await client.send(accounts("typed"), Withdraw(1)), str)
"""

MISUSE = """
from sourcery import Client


async def misuse() -> None:
    async with Runtime.open("sqlite://:memory:", [accounts]) as rt:
        state: int = await rt.state(accounts("x"))
        await rt.send(accounts("x"), Deposited(5))
    async with Client.open("memory://") as client:
        await client.send(accounts("x"), Deposited(5))
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def check(path: Path, cache_dir: Path) -> tuple[str, int]:
    out, err, status = api.run(
        ["--strict", "--cache-dir", str(cache_dir), "--no-error-summary", str(path)]
    )
    return out + err, status


def readme_code() -> str:
    return "\n".join(code for _, code in python_blocks(README.read_text(encoding="utf-8")))


def test_the_readme_type_checks_strictly(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "readme_code.py"
    path.write_text(readme_code() + USES, encoding="utf-8")
    output, status = check(path, cache_dir)
    assert status == 0, output


def page_code(page: Path) -> str:
    return "\n".join(code for _, code in python_blocks(page.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "page", [p for p in DOCS if page_code(p)], ids=lambda p: str(p.relative_to(ROOT / "docs"))
)
def test_the_docs_type_check_strictly(page: Path, tmp_path: Path, cache_dir: Path) -> None:
    code = page_code(page)
    path = tmp_path / (page.stem.replace("-", "_") + ".py")
    path.write_text(code, encoding="utf-8")
    output, status = check(path, cache_dir)
    assert status == 0, output


def test_a_wrong_state_type_is_reported(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "misuse.py"
    path.write_text(readme_code() + MISUSE, encoding="utf-8")
    output, status = check(path, cache_dir)
    assert status == 1
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert len(errors) == 3, output
    assert 'type "ActorRef[Account, Deposit | Withdraw, Deposited | Withdrew]"' in errors[0]
    assert 'expected "ActorRef[int, Any, Any]"' in errors[0]
    assert '"send" of "Runtime"' in errors[1]
    assert '"send" of "Client"' in errors[2]

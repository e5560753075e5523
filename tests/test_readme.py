"""Every ```python block of README.md and of the docs (docs/**/*.md) runs, in order, so the
examples never rot. Each page's blocks share one namespace, in a fresh directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
"""The docs site's pages (``make docs`` builds them)."""
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The python blocks of a markdown text, each with the line its code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction() -> None:
    text = "intro\n```python\nx = 1\n```\n```sh\nmake\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]


def run_blocks(path: Path) -> None:
    """Run a page's python blocks in order, in the current directory."""
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    # The blocks share one namespace, as they would in one file: later ones use earlier ones.
    namespace: dict[str, object] = {"__name__": path.stem.replace("-", "_")}
    for line, code in blocks:
        # Pad so that a traceback points at the page's own line numbers.
        source = "\n" * (line - 1) + code
        exec(compile(source, str(path), "exec"), namespace)


def test_readme_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert python_blocks(README.read_text(encoding="utf-8")), f"{README} has no python block"
    monkeypatch.chdir(tmp_path)
    run_blocks(README)


def test_the_readme_runs_twice_in_one_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user would: the files the first run left (``bank.db``) do not break the second."""
    monkeypatch.chdir(tmp_path)
    run_blocks(README)
    run_blocks(README)


def test_there_are_docs_with_code() -> None:
    assert ROOT / "docs" / "index.md" in DOCS
    assert sum(bool(python_blocks(p.read_text(encoding="utf-8"))) for p in DOCS) >= 6


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_docs_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_blocks(page)
    run_blocks(page)  # twice, in the same directory: examples are re-runnable

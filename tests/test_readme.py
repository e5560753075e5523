"""Every ```python block of README.md runs, in order, so the examples never rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The python blocks of a markdown text, each with the line its code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction() -> None:
    text = "intro\n```python\nx = 1\n```\n```sh\nmake\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]


def test_readme_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, f"{README} has no ```python block"
    monkeypatch.chdir(tmp_path)
    # The blocks share one namespace, as they would in one file: later ones use earlier ones.
    namespace: dict[str, object] = {"__name__": "readme"}
    for line, code in blocks:
        # Pad so that a traceback points at the README's own line numbers.
        source = "\n" * (line - 1) + code
        exec(compile(source, str(README), "exec"), namespace)

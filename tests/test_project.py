"""The project's basics: a licence, a changelog, package metadata a registry can show."""

from __future__ import annotations

from importlib.metadata import metadata
from pathlib import Path

from sourcery._core.version import __version__

ROOT = Path(__file__).parent.parent


def test_the_package_says_its_licence_and_shows_the_readme() -> None:
    meta = metadata("sourcery")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "# Sourcery" in str(meta["Description"] or meta.get_payload())  # type: ignore[attr-defined]
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])


def test_the_licence_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_the_changelog_names_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog")
    assert f"## [{__version__}]" in text


def test_the_docs_build_needs_nothing_from_the_internet() -> None:
    """No web fonts, no CDN: ``make docs`` and the site it builds work offline."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "font: false" in config
    assert "strict: true" in config
    assert "http://" not in config and "https://" not in config
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "mkdocs build --strict" in makefile
    assert "$(MAKE) docs" in makefile.split("\ntest:")[1].split("\n\n")[0]

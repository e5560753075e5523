"""Under CI (or ``make test``) a service that does not answer fails the run, not a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
POOL_TESTS = TESTS / "stores" / "test_postgres_pool.py"
NOWHERE = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def _pytest(**env: str) -> subprocess.CompletedProcess[str]:
    """Run one PostgreSQL test file against a server that is not there."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "SOURCERY_TEST_REQUIRE_SERVICES", "SOURCERY_TEST_SKIP_SERVICES")
    }
    environ |= {"SOURCERY_TEST_POSTGRES": NOWHERE, **env}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(TESTS / "stores" / "test_postgres_pool.py"),
        ],
        capture_output=True,
        text=True,
        env=environ,
        cwd=TESTS.parent,
        timeout=120,
        check=False,
    )


def test_under_ci_a_missing_service_is_an_error() -> None:
    done = _pytest(CI="true")
    assert done.returncode != 0
    assert "services are required" in done.stdout + done.stderr
    assert "127.0.0.1:1" in done.stdout + done.stderr


def test_make_test_requires_services_too() -> None:
    done = _pytest(SOURCERY_TEST_REQUIRE_SERVICES="1")
    assert done.returncode != 0


def test_a_developer_may_opt_out_explicitly() -> None:
    done = _pytest(CI="true", SOURCERY_TEST_SKIP_SERVICES="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" in done.stdout
    assert "passed" not in done.stdout


def test_a_skip_for_a_missing_service_fails_when_services_are_required(tmp_path: Path) -> None:
    """A skip raised inside a test (not the session's check) is turned into a failure."""
    (tmp_path / "test_one.py").write_text(
        "import pytest\n\n\ndef test_one() -> None:\n"
        "    pytest.skip('no X at here:1; run scripts/ensure-services.sh')\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest"]
    env = os.environ | {"PYTHONPATH": str(TESTS), "SOURCERY_TEST_REQUIRE_SERVICES": "1"}
    env.pop("SOURCERY_TEST_SKIP_SERVICES", None)
    run = [*argv, str(tmp_path / "test_one.py")]
    required = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert required.returncode == 1, required.stdout
    assert "1 failed" in required.stdout
    env["SOURCERY_TEST_SKIP_SERVICES"] = "1"
    optional = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert optional.returncode == 0, optional.stdout
    assert "1 skipped" in optional.stdout

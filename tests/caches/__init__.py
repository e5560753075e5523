"""Tests of the caches (a package, so its module names do not clash with tests/stores)."""

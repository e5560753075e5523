"""Example actor types, used by ``sourcery demo``, the benchmarks and the tests."""

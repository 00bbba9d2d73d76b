"""Fixtures of tests/functional: in-process clusters (defined in fixtures.py, shared with the harness tests)."""

from tests.functional.fixtures import cluster, secure

__all__ = ["cluster", "secure"]

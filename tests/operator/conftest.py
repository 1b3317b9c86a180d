"""Operator test fixtures; the implementation lives in operator_harness.py."""

from operator_harness import cluster, operator

__all__ = ["cluster", "operator"]

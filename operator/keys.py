"""Work-queue keys: one type per kind, so the dispatch is by type and a wrong key cannot type-check.

A key names an object, never carries it: the pass reads the object fresh
(level-triggered), so two events about one object are one key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ValidationKey:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class DatasetKey:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class AlgorithmKey:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class PolicyKey:
    """SandboxPolicies are cluster-scoped."""

    name: str


Key = ValidationKey | DatasetKey | AlgorithmKey | PolicyKey

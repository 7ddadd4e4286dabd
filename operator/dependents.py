"""Which Validations name which Algorithm and Dataset, kept from the Validation watch.

An Algorithm's or a Dataset's change wakes the Validations that name it, not every
Validation of its namespace: waking all cost N passes per event, and N² once the
operator's own status writes on N Algorithms came back as events. This is not a kopf
index: with any index registered, kopf holds the first event of every watched object
until all of them are indexed and wakes every held one at each step, O(N²) at start
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Ref = tuple[str, str, str]  # (namespace, plural, name) of an Algorithm or a Dataset
_FIELDS = (("algorithms", "algorithmRef"), ("datasets", "datasetRef"))


def references(namespace: str, spec: Mapping[str, Any] | None) -> set[Ref]:
    """The Algorithm and the Dataset a Validation's spec names (a malformed spec names none)."""
    refs: set[Ref] = set()
    for plural, field_name in _FIELDS:
        ref = (spec or {}).get(field_name)
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            refs.add((namespace, plural, name))
    return refs


@dataclass
class Dependents:
    _by_ref: dict[Ref, set[str]] = field(default_factory=dict)
    _by_validation: dict[tuple[str, str], set[Ref]] = field(default_factory=dict)

    def update(self, namespace: str, name: str, spec: Mapping[str, Any] | None) -> None:
        """A Validation's current references; ``spec`` None when it was deleted."""
        new = references(namespace, spec) if spec is not None else set()
        old = self._by_validation.pop((namespace, name), set())
        for ref in old - new:
            names = self._by_ref.get(ref, set())
            names.discard(name)
            if not names:
                self._by_ref.pop(ref, None)
        for ref in new:
            self._by_ref.setdefault(ref, set()).add(name)
        if new:
            self._by_validation[(namespace, name)] = new

    def of(self, namespace: str, plural: str, name: str) -> list[str]:
        return sorted(self._by_ref.get((namespace, plural, name), ()))

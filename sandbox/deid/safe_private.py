"""The safelist for the Retain Safe Private option.

A private attribute is identified by its private creator, its (odd) group and
the low byte of its element, since the block it lands in (the xx of (gggg,xxEE))
differs from file to file. Only attributes on the list survive, and only when
the option is chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SAFELIST_FILE = "safe_private_attributes.json"


@dataclass(frozen=True, slots=True)
class SafePrivateList:
    entries: frozenset[tuple[str, int, int]]  # (creator, group, element low byte)

    def allows(self, creator: str, group: int, element: int) -> bool:
        return (creator, group, element & 0xFF) in self.entries

    @classmethod
    def from_json(cls, text: str) -> SafePrivateList:
        doc = json.loads(text)
        rows = doc["attributes"] if isinstance(doc, dict) else doc
        entries = set()
        for row in rows:
            group, element = int(str(row["group"]), 16), int(str(row["element"]), 16)
            if not group & 1 or not 0 <= element <= 0xFF:
                raise ValueError(f"safe private entry {row!r}: group must be odd and element one byte (hex)")
            entries.add((str(row["creator"]).strip(), group, element))
        return cls(frozenset(entries))

    @classmethod
    def load(cls, path: Path | None = None) -> SafePrivateList:
        """The packaged list, or ``path`` (same JSON shape) instead of it."""
        if path is not None:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        return cls.from_json(Path(__file__).with_name(SAFELIST_FILE).read_text(encoding="utf-8"))

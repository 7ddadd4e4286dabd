"""The wall clock the controller reads, in one place so a test can set it.

Whole seconds: status timestamps are compared and written back, and the API
server keeps seconds only.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)

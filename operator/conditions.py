"""Conditions and Events: how the controller tells users what it decided.

Status carries the facts (conditions keep their transition time while their
status holds); Events are best effort on top.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from lightbox.api.common import Condition
from lightbox.operator import clock
from lightbox.operator.kube import KubeError, path

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

log = logging.getLogger("lightbox.operator")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# A condition's status as the model's literal type; a KeyError names any other value.
_STATUSES: dict[str, Literal["True", "False", "Unknown"]] = {"True": "True", "False": "False", "Unknown": "Unknown"}


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Replace one condition, keeping its transition time when the status did not change."""
    out = [c for c in conditions or [] if c.type != type_]
    previous = next((c for c in conditions or [] if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    out.append(
        Condition(
            type=type_,
            status=_STATUSES[status],
            reason=reason,
            message=message[:4096],
            last_transition_time=since,
            observed_generation=generation,
        )
    )
    return sorted(out, key=lambda c: c.type)


async def post_event(
    runtime: Runtime, obj: dict[str, Any], type_: str, reason: str, message: str
) -> None:
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    now = clock.utcnow().isoformat().replace("+00:00", "Z")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": "lightbox-operator"},
        "reportingComponent": "lightbox.dev/operator",
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await runtime.kube.create(path("events", namespace), event)
    except KubeError as exc:  # Events are best effort; status carries the facts.
        log.warning("could not post event %s: %s", reason, exc)


"""Where a ``subPath`` really points inside its claim, whatever its spelling.

The API server refuses sub-paths that are not written in normal form (see
``VolumeLocation``), but an object may predate that rule or reach the operator
another way. The operator therefore resolves both locations of a Dataset the way
a path walk would and refuses a ground truth that contains, or lies inside, the
studies: that would mount the truth where the vendor's input is staged from.
"""

from __future__ import annotations

from lightbox.api.common import VolumeLocation


class EscapesClaim(ValueError):
    """A sub-path whose ``..`` segments climb above the claim's root."""


def segments(sub_path: str) -> tuple[str, ...]:
    """The folders a sub-path walks into from the claim's root.

    ``''``, ``'.'`` and ``'/'`` are the root; empty and ``.`` segments are skipped,
    ``..`` steps back (a leading ``/`` is read as the claim's root, where a mount
    would put it). Climbing above the root raises ``EscapesClaim``. Symbolic links
    inside the claim cannot be seen from here: the trusted steps must not follow them.
    """
    walked: list[str] = []
    for part in sub_path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not walked:
                raise EscapesClaim(f"sub-path {sub_path!r} climbs above the claim's root")
            walked.pop()
            continue
        walked.append(part)
    return tuple(walked)


def normalised(sub_path: str) -> str:
    """The one spelling of a sub-path the API server admits: ``a/b``, or ``''`` for the root."""
    return "/".join(segments(sub_path))


def overlap(first: VolumeLocation, second: VolumeLocation) -> bool:
    """True when one location contains the other (or both are one), on the same claim.

    Segments are compared case-folded: on a case-insensitive file system ``Truth``
    and ``truth`` are one folder, and treating them as one only ever refuses more.
    A sub-path that escapes its claim counts as overlapping: it could reach anything.
    """
    if first.claim_name != second.claim_name:
        return False
    try:
        a = tuple(s.casefold() for s in segments(first.sub_path))
        b = tuple(s.casefold() for s in segments(second.sub_path))
    except EscapesClaim:
        return True
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]

"""Keyed, consistent pseudonyms.

Every replacement identifier is HMAC-SHA256 of the original under the site's
secret key, with a purpose label so a UID and a patient ID that happen to be
equal do not map to related outputs. Same key -> same pseudonyms across files
and runs (so studies de-identified months apart still link); without the key
nobody can recompute or test a guess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PATIENT_PREFIX = "LB"
PATIENT_PSEUDONYM = re.compile(r"^LB[A-Z2-7]{16}$")
UID_ROOT = "2.25."
MIN_KEY_BYTES = 16
# Dates move back by 1..MAX_SHIFT_DAYS days, the same offset for all of a patient's data.
MAX_SHIFT_DAYS = 3650


class KeyFileError(ValueError):
    """The secret key is missing or too short."""


def load_key(path: Path) -> bytes:
    """Read a key file (e.g. a mounted Kubernetes Secret); surrounding whitespace is ignored."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are required")
    return key


def new_key() -> bytes:
    return base64.b64encode(os.urandom(32))


MEMO_LIMIT = 1 << 16


@dataclass(frozen=True, slots=True)
class Pseudonymizer:
    key: bytes
    # Study, series and frame-of-reference UIDs repeat in every slice of a series, so
    # digests are memoised (per instance, so per worker process; bounded).
    _memo: dict[tuple[str, bytes | str], bytes] = field(default_factory=dict, compare=False, repr=False)
    _uids: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    _patients: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def digest(self, purpose: str, value: bytes | str) -> bytes:
        memo_key = (purpose, value)
        found = self._memo.get(memo_key)
        if found is None:
            data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            found = hmac.new(self.key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = found
        return found

    def uid(self, uid: str) -> str:
        """A ``2.25.`` UID (at most 44 characters) standing for ``uid``."""
        found = self._uids.get(uid)
        if found is None:
            found = UID_ROOT + str(int.from_bytes(self.digest("uid", uid)[:16], "big"))
            if len(self._uids) >= MEMO_LIMIT:
                self._uids.clear()
            self._uids[uid] = found
        return found

    def patient_id(self, identity: str) -> str:
        found = self._patients.get(identity)
        if found is None:
            found = PATIENT_PREFIX + base64.b32encode(self.digest("patient", identity)[:10]).decode()
            if len(self._patients) >= MEMO_LIMIT:
                self._patients.clear()
            self._patients[identity] = found
        return found

    def date_shift_days(self, identity: str) -> int:
        return -(1 + int.from_bytes(self.digest("date-shift", identity)[:4], "big") % MAX_SHIFT_DAYS)

    def path_token(self, purpose: str, value: str) -> str:
        """A short token for output file and folder names."""
        return self.digest("path-" + purpose, value)[:10].hex()

"""Output names and pseudonyms are keyed: nobody without the site's key can compute them.

The construction is fixed (docs/deid.md, "Pseudonyms and the key"): HMAC-SHA256 under the
key of ``purpose + NUL + value``; output tokens are the first 10 bytes in hex (purposes
``path-study`` and ``path-instance``), the patient folder is ``LB`` + base32 of the first 10
bytes (purpose ``patient``, value ``id:<PatientID>``), UIDs are ``2.25.`` + the first 16
bytes as an integer (purpose ``uid``). It must not change: studies de-identified months
apart link only through it. The expected values are computed here with the ``cryptography``
package's HMAC, not the standard library's that the code uses.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from pydicom.data import get_testdata_file

from lightbox.sandbox.deid import deidentify_tree, pseudonyms
from lightbox.sandbox.deid.pseudonyms import KeyFileError, Pseudonymizer, load_key, new_key

KEY = b"pseudonym-test-key-0123456789abc"
OTHER_KEY = b"pseudonym-other-key-0123456789ab"
STUDY = "1.2.826.0.1.3680043.8.498.1"
INSTANCES = ("1.2.826.0.1.3680043.8.498.1.1", "1.2.826.0.1.3680043.8.498.1.2")
PATIENT = "PAT-0042"


def hmac_sha256(key: bytes, purpose: str, value: str) -> bytes:
    mac = HMAC(key, hashes.SHA256())
    mac.update(purpose.encode() + b"\0" + value.encode())
    return mac.finalize()


def expected_path(key: bytes, patient: str, study: str, instance: str) -> str:
    folder = "LB" + base64.b32encode(hmac_sha256(key, "patient", "id:" + patient)[:10]).decode()
    study_token = hmac_sha256(key, "path-study", study)[:10].hex()
    instance_token = hmac_sha256(key, "path-instance", instance)[:10].hex()
    return f"{folder}/{study_token}/{instance_token}.dcm"


@pytest.fixture()
def studies(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for number, uid in enumerate(INSTANCES, start=1):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.StudyInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = PATIENT, STUDY, uid, number
        ds.save_as(src / f"{number}.dcm", enforce_file_format=True)
    return src


def output_names(src: Path, dst: Path, key: bytes) -> set[str]:
    summary = deidentify_tree(src, dst, key=key, jobs=1)
    assert summary.errors == 0 and summary.written == len(INSTANCES), summary
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*.dcm")}


def test_output_names_are_the_documented_hmac(studies: Path, tmp_path: Path) -> None:
    names = output_names(studies, tmp_path / "out", KEY)
    assert names == {expected_path(KEY, PATIENT, STUDY, uid) for uid in INSTANCES}


def test_another_key_gives_other_names_for_the_same_uids(studies: Path, tmp_path: Path) -> None:
    one = output_names(studies, tmp_path / "one", KEY)
    other = output_names(studies, tmp_path / "other", OTHER_KEY)
    assert other == {expected_path(OTHER_KEY, PATIENT, STUDY, uid) for uid in INSTANCES}
    # No component in common: not the patient folder, not the study, not an instance.
    parts = lambda names: {part for name in names for part in name.split("/")}  # noqa: E731
    assert not parts(one) & parts(other)


def unkeyed_guesses(purpose: str, value: str) -> set[str]:
    """What someone holding the original UIDs but not the key could compute and compare."""
    guesses = set()
    for message in (value.encode(), purpose.encode() + b"\0" + value.encode(), (purpose + value).encode()):
        for algorithm in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "blake2b", "blake2s"):
            digest = hashlib.new(algorithm, message).digest()
            guesses.add(digest[:10].hex())
            guesses.add(digest.hex()[:20])
        for key in (b"", value.encode(), purpose.encode()):
            guesses.add(hmac_sha256(key, purpose, value)[:10].hex())
    return guesses


@pytest.mark.parametrize(("purpose", "value"), [("study", STUDY), ("instance", INSTANCES[0])])
def test_a_token_cannot_be_recomputed_from_the_uid_without_the_key(purpose: str, value: str) -> None:
    token = Pseudonymizer(KEY).path_token(purpose, value)
    assert token == hmac_sha256(KEY, "path-" + purpose, value)[:10].hex()
    assert token not in unkeyed_guesses("path-" + purpose, value)
    assert token not in unkeyed_guesses(purpose, value)
    assert Pseudonymizer(OTHER_KEY).path_token(purpose, value) != token


def test_tokens_depend_on_the_purpose_and_the_value() -> None:
    pseudo = Pseudonymizer(KEY)
    study_token = pseudo.path_token("study", STUDY)
    assert pseudo.path_token("instance", STUDY) != study_token  # same value, other purpose
    assert pseudo.path_token("study", STUDY + "1") != study_token
    assert Pseudonymizer(KEY).path_token("study", STUDY) == study_token  # same key, same name


def test_uids_and_patient_ids_are_the_documented_hmac() -> None:
    pseudo = Pseudonymizer(KEY)
    assert pseudo.uid(STUDY) == "2.25." + str(int.from_bytes(hmac_sha256(KEY, "uid", STUDY)[:16], "big"))
    assert pseudo.patient_id("id:" + PATIENT) == "LB" + base64.b32encode(
        hmac_sha256(KEY, "patient", "id:" + PATIENT)[:10]
    ).decode()
    other = Pseudonymizer(OTHER_KEY)
    assert other.uid(STUDY) != pseudo.uid(STUDY)
    assert other.patient_id("id:" + PATIENT) != pseudo.patient_id("id:" + PATIENT)


def test_date_shift_is_keyed() -> None:
    # 1 + (first 4 bytes, big-endian, mod 3650) days back: docs/deid.md's 1..3650 days.
    def expected(key: bytes) -> int:
        return -(1 + int.from_bytes(hmac_sha256(key, "date-shift", "id:" + PATIENT)[:4], "big") % 3650)

    assert Pseudonymizer(KEY).date_shift_days("id:" + PATIENT) == expected(KEY)
    assert Pseudonymizer(OTHER_KEY).date_shift_days("id:" + PATIENT) == expected(OTHER_KEY)


def test_a_key_of_sixteen_bytes_is_enough_and_fifteen_are_not(tmp_path: Path) -> None:
    (tmp_path / "16").write_bytes(b"k" * 16 + b"\n")  # surrounding whitespace does not count
    assert load_key(tmp_path / "16") == b"k" * 16
    (tmp_path / "15").write_bytes(b" " + b"k" * 15 + b"\n")
    with pytest.raises(KeyFileError, match="holds 15 bytes; at least 16 are required"):
        load_key(tmp_path / "15")
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_key(tmp_path / "missing")


def test_a_new_key_is_32_random_bytes_in_base64() -> None:
    first, second = new_key(), new_key()
    assert len(base64.b64decode(first, validate=True)) == 32
    assert first != second


def test_bytes_and_undecodable_text_are_hashed_as_their_bytes() -> None:
    # Values read from files that are not valid UTF-8 reach the pseudonymizer as text with
    # surrogate escapes (or as bytes); both must hash as the original bytes, not fail.
    pseudo = Pseudonymizer(KEY)
    raw = b"1.2.840.\xff\xfe"
    mac = HMAC(KEY, hashes.SHA256())
    mac.update(b"uid\0" + raw)
    expected = mac.finalize()
    assert pseudo.digest("uid", raw) == expected
    assert pseudo.digest("uid", raw.decode("utf-8", "surrogateescape")) == expected


class CountingPseudonymizer(Pseudonymizer):
    """Counts digests actually computed (HMAC calls) and digests asked for."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        object.__setattr__(self, "asked", [])

    def digest(self, purpose: str, value: bytes | str) -> bytes:
        self.asked.append((purpose, value))
        return super().digest(purpose, value)


def test_repeated_values_are_served_from_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    # Study and series UIDs repeat in every slice: they must be hashed once per process.
    computed = []
    real_new = pseudonyms.hmac.new
    monkeypatch.setattr(pseudonyms.hmac, "new", lambda *a, **k: computed.append(a) or real_new(*a, **k))
    pseudo = CountingPseudonymizer(KEY)
    for _ in range(3):
        pseudo.uid(STUDY)
        pseudo.patient_id("id:" + PATIENT)
        pseudo.path_token("study", STUDY)
    assert len(computed) == 3  # uid, patient, path-study: each once
    assert pseudo.asked.count(("uid", STUDY)) == 1
    assert pseudo.asked.count(("patient", "id:" + PATIENT)) == 1


def test_memos_stay_within_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pseudonyms, "MEMO_LIMIT", 8)  # the real one (65536) only takes longer
    pseudo = Pseudonymizer(KEY)
    for n in range(pseudonyms.MEMO_LIMIT + 1):
        pseudo.uid(f"1.2.3.{n}")
        pseudo.patient_id(f"id:{n}")
    assert len(pseudo._memo) <= pseudonyms.MEMO_LIMIT
    assert len(pseudo._uids) <= pseudonyms.MEMO_LIMIT
    assert len(pseudo._patients) <= pseudonyms.MEMO_LIMIT

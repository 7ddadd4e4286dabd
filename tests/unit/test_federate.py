"""Evidence pooled across regions: three simulated sites pool to the AUC of their pooled raw data
(scikit-learn's, computed here independently), no published cell is small, and federate refuses
altered, unsigned or untrusted exports."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.metrics import roc_auc_score

from lightbox import federate
from lightbox.api.evidence import Evidence
from lightbox.sandbox.evidence import sufficient_statistics

SITES = {  # name: (cases, prevalence, separation, seed)
    "north": (1200, 0.30, 1.4, 11),
    "south": (800, 0.20, 1.0, 12),
    "east": (500, 0.45, 1.8, 13),
}


def simulate(cases: int, prevalence: float, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(cases) < prevalence).astype(int)
    z = rng.normal(size=cases) + separation * y
    return y, 1 / (1 + np.exp(-(z - 0.8)))  # scores in (0, 1), skewed like a calibrated classifier's


def write_export(tmp: Path, name: str, evidence: Evidence, key: Ed25519PrivateKey) -> Path:
    payload = {
        "region": name,
        "exportedAt": "2026-11-30T00:00:00Z",
        "evidence": evidence.model_dump(mode="json", by_alias=True),
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(federate.sign(payload, key)))
    return path


def public_pem(tmp: Path, name: str, key: Ed25519PrivateKey) -> Path:
    path = tmp / f"{name}.pub"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.fixture
def three_sites(tmp_path):
    keys = {name: Ed25519PrivateKey.generate() for name in SITES}
    raw = {name: simulate(*spec) for name, spec in SITES.items()}
    files = [write_export(tmp_path, n, sufficient_statistics(y, s, 0.5, 10), keys[n]) for n, (y, s) in raw.items()]
    pubs = [public_pem(tmp_path, n, k) for n, k in keys.items()]
    return raw, files, pubs, keys


def test_three_sites_pool_to_the_auc_of_their_pooled_raw_data(three_sites, capsys):
    raw, files, pubs, _ = three_sites
    trusted = {federate.key_id(federate.load_public_key(p)): federate.load_public_key(p) for p in pubs}
    pooled = federate.pool([federate.read_signed(f, trusted) for f in files])
    y = np.concatenate([r[0] for r in raw.values()])
    s = np.concatenate([r[1] for r in raw.values()])
    truth = roc_auc_score(y, s)
    assert abs(pooled.auc.value - truth) < 0.005, (pooled.auc.value, truth)
    low, high = pooled.auc.interval()
    assert low < truth < high
    # Each site's own AUC, from its histogram alone, is close to its raw AUC too.
    for site in pooled.sites:
        ys, ss = raw[site.name]
        assert abs(site.auc.value - roc_auc_score(ys, ss)) < 0.01
    # Pooled sensitivity and specificity are the pooled counts' proportions.
    called = s >= 0.5
    assert pooled.sensitivity[0] == pytest.approx((called & (y == 1)).sum() / (y == 1).sum())
    assert pooled.specificity[0] == pytest.approx((~called & (y == 0)).sum() / (y == 0).sum())

    assert federate.main([*map(str, files), "--trust", *map(str, pubs)]) == 0
    out = capsys.readouterr().out
    assert f"pooled AUC {pooled.auc.value:.4f}" in out and "I² = " in out
    assert sum(line.count("o") for line in out.split("forest plot")[1].splitlines()[2:]) >= 3


def test_an_altered_export_is_refused(three_sites, tmp_path, capsys):
    _, files, pubs, _ = three_sites
    document = json.loads(files[0].read_text())
    document["payload"]["evidence"]["positives"][1][2] += 50  # more positives in one cell
    files[0].write_text(json.dumps(document))
    assert federate.main([*map(str, files), "--trust", *map(str, pubs)]) == 1
    err = capsys.readouterr().err
    assert f"refused {files[0]}" in err and "does not match the payload" in err


def test_an_unsigned_export_is_refused(three_sites, capsys):
    _, files, pubs, _ = three_sites
    document = json.loads(files[1].read_text())
    del document["signature"]
    files[1].write_text(json.dumps(document))
    assert federate.main([*map(str, files), "--trust", *map(str, pubs)]) == 1
    assert "unsigned" in capsys.readouterr().err


def test_an_export_signed_by_a_key_nobody_trusted_is_refused(three_sites, tmp_path, capsys):
    raw, files, pubs, _ = three_sites
    y, s = raw["east"]
    stranger = write_export(tmp_path, "east", sufficient_statistics(y, s, 0.5, 10), Ed25519PrivateKey.generate())
    assert federate.main([str(files[0]), str(stranger), "--trust", *map(str, pubs)]) == 1
    assert "not among the trusted keys" in capsys.readouterr().err


def test_a_signature_moved_to_another_payload_is_refused(three_sites):
    _, files, pubs, _ = three_sites
    trusted = {federate.key_id(federate.load_public_key(p)): federate.load_public_key(p) for p in pubs}
    one, two = json.loads(files[0].read_text()), json.loads(files[1].read_text())
    one["payload"] = two["payload"]
    with pytest.raises(federate.EvidenceError, match="does not match"):
        federate.verify_signed(one, trusted)


def test_no_published_cell_holds_fewer_cases_than_the_minimum() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n = int(rng.integers(20, 400))
        y = (rng.random(n) < rng.uniform(0.05, 0.5)).astype(int)
        s = rng.beta(0.5, 0.5, size=n)
        ev = sufficient_statistics(y, s, 0.5, 10)
        for cells, cls in ((ev.positives, 1), (ev.negatives, 0)):
            if cells is None:
                assert (y == cls).sum() < 10
                continue
            assert all(c == 0 or c >= 10 for _, _, c in cells)
            assert sum(c for _, _, c in cells) == (y == cls).sum()  # coarsened, not dropped
            assert [a for a, _, _ in cells] == [0] + [b for _, b, _ in cells[:-1]] and cells[-1][1] == 20
        c = ev.confusion
        for a, b in ((c.tp, c.fn), (c.fp, c.tn)):
            assert (a is None) == (b is None)
            assert a is None or ((a == 0 or a >= 10) and (b == 0 or b >= 10))


def test_a_small_confusion_cell_suppresses_its_pair() -> None:
    # 30 positives, 3 of them below the threshold; 40 negatives, 20 above.
    y = np.array([1] * 30 + [0] * 40)
    s = np.array([0.9] * 27 + [0.1] * 3 + [0.7] * 20 + [0.2] * 20)
    ev = sufficient_statistics(y, s, 0.5, 10)
    assert (ev.confusion.tp, ev.confusion.fn) == (None, None)
    assert (ev.confusion.fp, ev.confusion.tn) == (20, 20)


def test_binned_auc_on_shapes_with_known_answers() -> None:
    pos, neg = np.zeros(20), np.zeros(20)
    pos[15], neg[3] = 10, 10
    assert federate.binned_auc(pos, neg).value == 1.0
    pos2, neg2 = np.zeros(20), np.zeros(20)
    pos2[7], neg2[7] = 10, 30
    assert federate.binned_auc(pos2, neg2).value == 0.5  # all tied: each pair counts half
    # 2 positives in bins 5 and 9; 2 negatives in bins 5 and 1. Pairs by hand:
    # (5,5) tie 0.5, (5,1) 1, (9,5) 1, (9,1) 1 -> 3.5 / 4.
    pos3, neg3 = np.zeros(20), np.zeros(20)
    pos3[[5, 9]] = 1
    neg3[[5, 1]] = 1
    assert federate.binned_auc(pos3, neg3).value == 0.875


def test_binned_delong_variance_matches_placement_values_counted_pair_by_pair() -> None:
    rng = np.random.default_rng(3)
    pos_bins, neg_bins = rng.integers(6, 20, size=37), rng.integers(0, 14, size=52)

    def psi(a: int, b: int) -> float:
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = np.array([np.mean([psi(p, q) for q in neg_bins]) for p in pos_bins])
    v01 = np.array([np.mean([psi(p, q) for p in pos_bins]) for q in neg_bins])
    auc = v10.mean()
    expected = v10.var(ddof=1) / len(pos_bins) + v01.var(ddof=1) / len(neg_bins)  # DeLong et al. 1988
    got = federate.binned_auc(
        np.bincount(pos_bins, minlength=20).astype(float), np.bincount(neg_bins, minlength=20).astype(float)
    )
    assert got.value == pytest.approx(auc) and got.variance == pytest.approx(expected)


def test_i_squared_of_a_hand_computed_example() -> None:
    # Weights 1000 each, mean 0.8: Q = 1000 * (0.01 + 0 + 0.01) = 20; I² = (20 - 2) / 20.
    q, i2 = federate.heterogeneity([0.7, 0.8, 0.9], [0.001, 0.001, 0.001])
    assert q == pytest.approx(20) and i2 == pytest.approx(0.9)
    assert federate.heterogeneity([0.8, 0.8], [0.01, 0.02]) == (0.0, 0.0)


def test_an_export_of_a_record_without_evidence_says_so() -> None:
    record = {"metadata": {"name": "x-1"}, "spec": {"run": {"name": "r1"}}}
    with pytest.raises(federate.EvidenceError, match="holds no evidence"):
        federate.payload_from_record(record, "north", datetime(2026, 1, 1, tzinfo=UTC))


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path) -> None:
    from lightbox import evidencecmd

    assert evidencecmd.main(["keygen", "-o", str(tmp_path / "north")]) == 0
    assert (tmp_path / "north.key").stat().st_mode & 0o077 == 0
    key = federate.load_private_key(tmp_path / "north.key")
    assert federate.key_id(key.public_key()) == federate.key_id(federate.load_public_key(tmp_path / "north.pub"))
    assert not math.isnan(0.0)


def test_the_scorer_reports_evidence_that_counts_the_cases_it_scored_and_fits(tmp_path, monkeypatch) -> None:
    from test_scorer import Run, _truth_and_scores

    from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, ScoreReport

    run = Run(tmp_path, monkeypatch, n=80)
    run.configure(subgroups=["sex", "site"], pooledEvidence=True)  # the region pools evidence (off by default)
    run.predict()
    code, text = run.score()
    assert code == 0 and len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    ev = ScoreReport.model_validate_json(text).evidence
    y, s = _truth_and_scores(run)
    assert ev is not None and ev.min_cell == 10 and ev.threshold == 0.5
    assert sum(c for _, _, c in ev.positives) == y.sum() and sum(c for _, _, c in ev.negatives) == (~y).sum()
    # Cell by cell, against the scores binned here with numpy.
    counts = np.histogram(s[y], bins=np.linspace(0, 1, 21))[0]
    assert [c for _, _, c in ev.positives] == [int(counts[a:b].sum()) for a, b, _ in ev.positives]


def test_the_largest_evidence_fits_beside_the_report() -> None:
    full = [(b, b + 1, 99999) for b in range(20)]
    ev = Evidence(
        min_cell=10,
        threshold=0.5,
        positives=full,
        negatives=full,
        confusion={"tp": 99999, "fn": 99999, "fp": 99999, "tn": 99999},
    )
    assert len(ev.model_dump_json(by_alias=True, exclude_none=True)) < 700


def test_evidence_in_the_audit_record_is_covered_by_its_hash() -> None:
    import factories

    from lightbox import auditchain
    from lightbox.api.validation import RunRecord
    from lightbox.operator import audit

    y, s = simulate(300, 0.3, 1.2, 4)
    ev = sufficient_statistics(y, s, 0.5, 10)
    v = factories.validation()
    v.metadata["uid"] = "u-1"
    body = audit.audit_record(v, RunRecord(name="r1", number=1, phase="Succeeded"), None, None, None, "x",
                              recorded_at=datetime(2026, 11, 30, tzinfo=UTC), evidence=ev)
    assert Evidence.model_validate(body["spec"]["evidence"]) == ev
    assert auditchain.verify([body]) == []
    body["spec"]["evidence"]["positives"][0][2] += 1
    (finding,) = auditchain.verify([body])
    assert finding.problem == "altered"


def test_keygen_never_overwrites_a_key(tmp_path) -> None:
    from lightbox import evidencecmd

    assert evidencecmd.main(["keygen", "-o", str(tmp_path / "north")]) == 0
    before = (tmp_path / "north.key").read_bytes()
    assert evidencecmd.main(["keygen", "-o", str(tmp_path / "north")]) == 2
    assert (tmp_path / "north.key").read_bytes() == before

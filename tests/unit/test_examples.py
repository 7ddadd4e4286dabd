"""The example manifests users copy from parse with the API models."""

from pathlib import Path

import pytest
import yaml

from lightbox.api import KINDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BY_KIND = {kind.kind_name: kind for kind in KINDS}


def documents():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("lightbox.dev/"):
                yield pytest.param(doc, id=f"{path.name}:{doc['kind']}")


@pytest.mark.parametrize("doc", list(documents()))
def test_example_parses(doc):
    BY_KIND[doc["kind"]].model_validate(doc)


def test_every_kind_has_an_example():
    # AuditRecords are written by the operator only: no user manifest makes one. An
    # AlgorithmApproval must name the person applying it (the API server refuses any other),
    # so it cannot be among the manifests the demos apply as admin: docs/approvals.md shows one.
    assert {p.values[0]["kind"] for p in documents()} == set(BY_KIND) - {"AuditRecord", "AlgorithmApproval"}

"""The CRDs in crds/ and the chart are exactly what the models generate."""

from __future__ import annotations

from pydantic import Field

from lightbox.api import KINDS, Validation, ValidationSpec
from lightbox.operator import crdgen


def test_checked_in_crds_match_the_models():
    assert crdgen.check() == [], "run `lightbox crds` and commit the result"
    assert crdgen.main(["--check"]) == 0


def test_a_model_change_without_regeneration_is_caught(monkeypatch, capsys):
    class ChangedSpec(ValidationSpec):
        priority: int = Field(default=0, description="A field someone added without regenerating.")

    class ChangedValidation(Validation):
        """An algorithm validated on a local dataset, once or continuously on a schedule."""

        spec: ChangedSpec

    monkeypatch.setattr(crdgen, "KINDS", tuple(ChangedValidation if k is Validation else k for k in KINDS))
    problems = crdgen.check()
    assert problems and any("priority" in p for p in problems)
    assert crdgen.main(["--check"]) == 1
    assert "lightbox crds" in capsys.readouterr().err


def test_a_hand_edit_is_caught(tmp_path):
    crdgen.write((tmp_path,))
    assert crdgen.check((tmp_path,)) == []
    target = tmp_path / "validations.lightbox.dev.yaml"
    target.write_text(target.read_text().replace("maxItems: 32", "maxItems: 33"))
    assert crdgen.check((tmp_path,))


def test_schemas_are_structural():
    def walk(node, path):
        assert "$ref" not in node and "anyOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        if "properties" in node or "additionalProperties" in node:
            assert node.get("type") == "object", path
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")
        if path.count(".") > 1:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path

    for kind in KINDS:
        manifest = crdgen.crd_manifest(kind)
        version = manifest["spec"]["versions"][0]
        # A record written once has no status to update separately.
        expected = {"status": {}} if "status" in kind.model_fields else None
        assert version.get("subresources") == expected, kind.kind_name
        assert manifest["spec"]["names"]["categories"] == ["lightbox"]
        walk(version["schema"]["openAPIV3Schema"], kind.kind_name)


def test_conditions_are_a_list_map_keyed_by_type():
    schema = crdgen.openapi_schema(Validation)
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_yaml_11_boolean_lookalikes_are_quoted():
    # kubectl reads YAML 1.1, where a bare `n` (the subgroup size field) is the boolean false.
    import re

    for text in crdgen.rendered_files().values():
        assert not re.search(r"^\s*(- )?(y|n|yes|no|on|off):?\s*$", text, flags=re.M | re.I)

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


def _nodes(schema, path=""):
    """Every schema node under ``schema`` with its path."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _rules(node):
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_no_number_has_a_fractional_bound_the_api_server_would_truncate():
    # The API server casts a bound to an integer when the value is whole: 0.999 becomes 0.
    for kind in KINDS:
        for path, node in _nodes(crdgen.openapi_schema(kind), kind.kind_name):
            for key in ("minimum", "maximum"):
                bound = node.get(key)
                assert bound is None or float(bound).is_integer(), f"{path}.{key} = {bound}"


def test_fractional_bounds_become_a_cel_rule_with_the_range_in_its_message():
    level = crdgen.openapi_schema(Validation)["properties"]["spec"]["properties"]["confidenceLevel"]
    assert "minimum" not in level and "maximum" not in level
    [rule] = level["x-kubernetes-validations"]
    assert rule["rule"] == "self >= 0.5 && self <= 0.999"
    assert rule["message"] == "must be at least 0.5 and at most 0.999"

    class Open(ValidationSpec):
        ratio: float = Field(default=0.5, gt=0.25, lt=0.75)
        whole: float = Field(default=1, ge=0, le=2)  # whole bounds are safe and stay in the schema

    class OpenValidation(Validation):
        """x"""

        spec: Open

    spec = crdgen.openapi_schema(OpenValidation)["properties"]["spec"]["properties"]
    assert spec["ratio"]["x-kubernetes-validations"][0]["rule"] == "self > 0.25 && self < 0.75"
    assert spec["ratio"]["x-kubernetes-validations"][0]["message"] == "must be greater than 0.25 and less than 0.75"
    assert "exclusiveMinimum" not in spec["ratio"] and "minimum" not in spec["ratio"]
    assert (spec["whole"]["minimum"], spec["whole"]["maximum"]) == (0, 2)
    assert "x-kubernetes-validations" not in spec["whole"]


def test_every_quantity_must_be_greater_than_zero():
    found = []
    for kind in KINDS:
        for path, node in _nodes(crdgen.openapi_schema(kind), kind.kind_name):
            rules = _rules(node)
            if "isQuantity(self)" in rules:
                found.append(path)
                assert "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))" in rules, path
    # Hand count: cpu, memory and ephemeral storage of an Algorithm and the three maxima of a policy.
    assert sorted(found) == sorted([
        "Algorithm.spec.resources.cpu", "Algorithm.spec.resources.memory", "Algorithm.spec.resources.ephemeralStorage",
        "SandboxPolicy.spec.maxCpu", "SandboxPolicy.spec.maxMemory", "SandboxPolicy.spec.maxEphemeralStorage",
    ])


# Strings users and vendors write whose own rules already admit only printable characters.
_SAFE_BY_OTHER_RULES = {"SandboxPolicy.spec.allowedRegistries[]"}


def test_every_string_a_user_or_vendor_writes_refuses_control_characters():
    from lightbox.api.common import CONTROL_CHARACTERS_RE2

    unguarded = []
    # AuditRecords are written by the operator from objects already admitted; refusing
    # one there would lose a record, so they are escaped when printed instead.
    for kind in (k for k in KINDS if k.kind_name != "AuditRecord"):
        spec = crdgen.openapi_schema(kind)["properties"]["spec"]
        for path, node in _nodes(spec, f"{kind.kind_name}.spec"):
            if node.get("type") != "string" or "enum" in node or "pattern" in node or node.get("format"):
                continue
            rules = _rules(node)
            if "isQuantity(self)" in rules or path in _SAFE_BY_OTHER_RULES:
                continue
            if not any(CONTROL_CHARACTERS_RE2 in rule for rule in rules):
                unguarded.append(path)
    assert unguarded == []


def test_lists_that_are_sets_say_so():
    spec = lambda kind: crdgen.openapi_schema(kind)["properties"]["spec"]["properties"]  # noqa: E731
    from lightbox.api import Algorithm, Dataset, SandboxPolicy

    assert spec(Algorithm)["labels"]["x-kubernetes-list-type"] == "set"
    assert spec(SandboxPolicy)["allowedRegistries"]["x-kubernetes-list-type"] == "set"
    assert spec(SandboxPolicy)["namespaces"]["x-kubernetes-list-type"] == "set"
    assert spec(Validation)["metrics"]["x-kubernetes-list-type"] == "set"
    assert spec(Validation)["subgroups"]["x-kubernetes-list-type"] == "set"
    assert spec(Dataset)["deidentification"]["properties"]["options"]["x-kubernetes-list-type"] == "set"

"""Generate CustomResourceDefinitions from the pydantic API models.

``lightbox crds`` writes crds/<plural>.lightbox.dev.yaml (and the Helm chart's
copy); ``lightbox crds --check`` exits 1 when either differs from what the
models generate, so hand edits and forgotten regenerations fail CI.

Pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0
schema: no $ref, every node typed, no ``additionalProperties: false``,
``nullable`` instead of ``anyOf [X, null]``, boolean exclusive bounds.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from lightbox.api import API_GROUP, API_VERSION, KINDS, KubeObject
from lightbox.api.common import CATEGORY

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIRS = (REPO_ROOT / "crds", REPO_ROOT / "charts" / "lightbox" / "crds")

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs and turn pydantic's JSON Schema into structural OpenAPI v3.0."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _without_optional(_inline_ref(dict(node), defs), defs)
    _openapi_keywords(node)
    extra = node.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _resolve(schema, defs) for name, schema in value.items()}
        else:
            out[key] = _resolve(value, defs)
    if isinstance(extra, dict):  # a map (dict[str, X]); `false` merely forbids extras, which pruning does
        out["additionalProperties"] = _resolve(extra, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return _fractional_bounds_as_cel(out)


def _inline_ref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
    return {**target, **node}  # the referencing field's description wins


def _without_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as X: structural schemas have no unions (absence is how None is written)."""
    any_of = node.pop("anyOf", None)
    if any_of is None:
        return node
    non_null = [option for option in any_of if option.get("type") != "null"]
    if len(non_null) != 1:
        raise ValueError(f"cannot express a union of {len(non_null)} types in a structural schema: {any_of}")
    inner = _resolve(non_null[0], defs)
    return {**inner, **{k: v for k, v in node.items() if k != "default" or v is not None}}


def _openapi_keywords(node: dict[str, Any]) -> None:
    """JSON Schema keywords OpenAPI v3.0 spells differently, rewritten in place."""
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "prefixItems" in node:
        items = node.pop("prefixItems")
        node["items"] = items[0]
        node.setdefault("minItems", len(items))
        node.setdefault("maxItems", len(items))
    for key, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool):
            node[flag] = node.pop(key)
            node[key] = True


def _is_fraction(bound: Any) -> bool:
    return isinstance(bound, float) and not bound.is_integer()


def _fractional_bounds_as_cel(node: dict[str, Any]) -> dict[str, Any]:
    """Move a number's fractional minimum/maximum into a CEL rule.

    The API server compares a whole-number value with a bound cast to an integer:
    ``maximum: 0.999`` becomes 0, so ``confidenceLevel: 1`` is refused as "should be
    less than or equal to 0" and ``minimum: 0.5`` lets 0 through. CEL compares as
    doubles, whatever the value's spelling.
    """
    if node.get("type") != "number" or not (_is_fraction(node.get("minimum")) or _is_fraction(node.get("maximum"))):
        return node
    node = dict(node)
    low, high = node.pop("minimum", None), node.pop("maximum", None)
    low_open, high_open = node.pop("exclusiveMinimum", False), node.pop("exclusiveMaximum", False)
    checks, words = [], []
    if low is not None:
        checks.append(f"self {'>' if low_open else '>='} {float(low)!r}")
        words.append(f"{'greater than' if low_open else 'at least'} {low:g}")
    if high is not None:
        checks.append(f"self {'<' if high_open else '<='} {float(high)!r}")
        words.append(f"{'less than' if high_open else 'at most'} {high:g}")
    message = "must be " + " and ".join(words)
    # Which side was crossed, since the value cannot be echoed (string(double) has no bounded cost).
    sides = []
    if low is not None:
        sides.append((f"!({checks[0]})", f"{message}: it is below {low:g}"))
    if high is not None:
        sides.append((f"!({checks[-1]})", f"{message}: it is above {high:g}"))
    expression = f"'{message}'"
    for condition, text in reversed(sides):
        expression = f"{condition} ? '{text}' : {expression}"
    rule = {"rule": " && ".join(checks), "message": message, "messageExpression": expression}
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]
    return node


def _mark_conditions(schema: dict[str, Any]) -> None:
    """Conditions are a map keyed by type, as every Kubernetes status does."""
    for name, prop in schema.get("properties", {}).items():
        if name == "conditions" and prop.get("type") == "array":
            prop["x-kubernetes-list-type"] = "map"
            prop["x-kubernetes-list-map-keys"] = ["type"]
        else:
            _mark_conditions(prop)
    if "items" in schema:
        _mark_conditions(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        _mark_conditions(schema["additionalProperties"])


def openapi_schema(model: type[KubeObject]) -> dict[str, Any]:
    """The structural schema of one kind: envelope, spec and status."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "lightbox.dev/v1alpha1"},
        "kind": {"type": "string", "description": model.kind_name},
        "metadata": {"type": "object"},
        "spec": _resolve(raw["properties"]["spec"], defs),
    }
    if "status" in raw["properties"]:  # a kind without status is a record, written once
        properties["status"] = _resolve(raw["properties"]["status"], defs)
        _mark_conditions(properties["status"])
    if model.__doc__ is None:
        raise ValueError(f"{model.__name__} has no docstring: a CRD's description is its kind's docstring")
    return {
        "type": "object",
        "description": model.__doc__.strip(),
        "required": ["spec"],
        "properties": properties,
    }


def crd_manifest(model: type[KubeObject]) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of one kind."""
    singular = model.kind_name.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{model.plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "lightbox"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": model.scope,
            "names": {
                "kind": model.kind_name,
                "listKind": f"{model.kind_name}List",
                "plural": model.plural,
                "singular": singular,
                "shortNames": list(model.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if "status" in model.model_fields else {}),
                    "additionalPrinterColumns": list(model.printer_columns),
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Quotes the strings that YAML 1.1 readers (kubectl's among them) take for booleans, such as ``n``."""


_YAML11_BOOLEANS = {"y", "yes", "n", "no", "true", "false", "on", "off"}


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if value.lower() in _YAML11_BOOLEANS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render(model: type[KubeObject]) -> str:
    header = "# Generated by `lightbox crds` from lightbox/api; do not edit by hand.\n"
    return header + yaml.dump(crd_manifest(model), Dumper=_Dumper, sort_keys=False, width=100)


def rendered_files() -> dict[str, str]:
    return {f"{model.plural}.{API_GROUP}.yaml": render(model) for model in KINDS}


def check(directories: tuple[Path, ...] = OUTPUT_DIRS) -> list[str]:
    """Differences between the checked-in CRDs and the models, as unified diffs."""
    problems = []
    for directory in directories:
        wanted = rendered_files()
        present = {p.name for p in directory.glob("*.yaml")} if directory.is_dir() else set()
        for name in sorted(present - wanted.keys()):
            problems.append(f"{directory / name}: not generated from any model (remove it)")
        for name, text in wanted.items():
            path = directory / name
            current = path.read_text() if path.exists() else ""
            if current != text:
                diff = difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True), str(path), f"{path} (from models)", n=1
                )
                problems.append("".join(diff) or f"{path}: missing")
    return problems


def write(directories: tuple[Path, ...] = OUTPUT_DIRS) -> list[Path]:
    written = []
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        wanted = rendered_files()
        for stale in directory.glob("*.yaml"):
            if stale.name not in wanted:
                stale.unlink()
        for name, text in wanted.items():
            (directory / name).write_text(text)
            written.append(directory / name)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightbox crds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when crds/ differs from the models")
    parser.add_argument("--out", type=Path, action="append", help="directory to write (default: crds/ and the chart)")
    args = parser.parse_args(argv)
    directories = tuple(args.out) if args.out else OUTPUT_DIRS
    if args.check:
        problems = check(directories)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("CRDs are out of date: run `lightbox crds` and commit the result.", file=sys.stderr)
            return 1
        print(f"CRDs match the models ({len(KINDS)} kinds).")
        return 0
    for path in write(directories):
        print(f"wrote {path}")
    return 0

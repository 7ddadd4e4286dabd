"""Building blocks shared by the custom resources.

``x-kubernetes-validations`` (CEL) rules ride along in ``json_schema_extra`` so
the CRD generator can copy them into the schema next to the field they guard:
the API server then rejects bad manifests at ``kubectl apply`` time with a
message that names the field and what is allowed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.results import Model

API_GROUP = "lightbox.dev"
API_VERSION = "v1alpha1"
CATEGORY = "lightbox"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Kueue LocalQueue is named like any object (DNS-1123 subdomain) and travels as the
# kueue.x-k8s.io/queue-name label, whose values stop at 63 characters (max_length).
QUEUE_NAME = DNS1123_SUBDOMAIN
# Registry host (with a dot or a port, or localhost) so the allow-list check is unambiguous.
REGISTRY = r"(localhost|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)(:[0-9]{1,5})?"
REPOSITORY_PATH = r"(/[a-z0-9]+([._-][a-z0-9]+)*)+"
TAG = r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
IMAGE_BY_DIGEST = r"^" + REGISTRY + REPOSITORY_PATH + TAG + r"@sha256:[a-f0-9]{64}$"


def image_rules() -> list[dict[str, str]]:
    """CEL rules that together accept exactly IMAGE_BY_DIGEST, each naming the part that is wrong.

    Each rule assumes the parts before it are right (``!earlier || this``), so one
    mistake gives one message. The value is never echoed: it is vendor-supplied.
    """
    name = "(self.contains('@') ? self.substring(0, self.indexOf('@')) : self)"
    digest = "self.substring(self.indexOf('@') + 1)"
    has_registry = f"{name}.matches(r'^{REGISTRY}/')"
    has_repository = f"{name}.matches(r'^{REGISTRY}{REPOSITORY_PATH}(:.*)?$')"
    return [
        no_control_characters(),
        cel(
            "self.contains('@')",
            "has no digest: must be pinned by digest, REGISTRY/REPOSITORY[:TAG]@sha256:<64 lowercase hex digits> "
            "(a tag alone can be moved to other content)",
        ),
        cel(
            f"!self.contains('@') || {digest}.matches(r'^sha256:[a-f0-9]{{64}}$')",
            "the digest after '@' must be sha256: followed by 64 lowercase hex digits",
            message_expression=(
                f"!{digest}.startsWith('sha256:') ? "
                "'the digest after @ must start with sha256: (then 64 lowercase hex digits)' : "
                f"size({digest}) < 71 ? 'the digest is too short: it must have 64 lowercase hex digits after sha256:' "
                ": "
                f"size({digest}) > 71 ? "
                "'the digest is too long: it must have 64 lowercase hex digits after sha256:, and the reference only "
                "one @' : "
                "'the digest after sha256: must be 64 lowercase hex digits (0-9, a-f)'"
            ),
        ),
        cel(
            has_registry,
            "must name a registry host before the repository: a lowercase host with a dot or a port, or localhost, "
            "then '/' (e.g. registry.example.org/vendor/product); a name without one would be pulled from Docker Hub",
        ),
        cel(
            f"!{has_registry} || {has_repository}",
            "the repository path after the registry host must be lowercase letters and digits, with single '.', '_' "
            "or '-' between them and '/' between segments (e.g. registry.example.org/vendor/chest-ai)",
        ),
        cel(
            f"!{has_repository} || {name}.matches(r'^{REGISTRY}{REPOSITORY_PATH}{TAG}$')",
            "the tag after ':' must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ),
    ]


# Characters that make one value print as several lines or restyle a terminal:
# C0 and C1 controls (newline, carriage return, ESC, CSI), the Unicode line and
# paragraph separators, and the bidirectional overrides that reorder what is shown.
# RE2 syntax (the API server's CEL); lightbox.text holds the Python twin used when printing.
CONTROL_CHARACTERS_RE2 = (
    r"[\x00-\x1f\x7f-\x9f\x{061c}\x{200e}\x{200f}\x{2028}\x{2029}\x{202a}-\x{202e}\x{2066}-\x{2069}]"
)
NO_CONTROL_CHARACTERS = (
    "must not contain control characters (newline, tab, escape sequences) or bidirectional-text controls: "
    "write it on one line (in YAML, a plain or quoted scalar, or >- rather than | or >)"
)


def cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    reason: str | None = None,
    message_expression: str | None = None,
) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry.

    ``message_expression`` (CEL returning a string) lets the message say more
    than ``message``; the API server falls back to ``message`` if it fails. Only
    echo values whose characters are known to be printable and whose length is
    bounded by a maxLength: the API server refuses a CRD whose messages could cost
    without bound, which rules out ``string(number)`` and joined lists.
    """
    entry = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def no_control_characters() -> dict[str, str]:
    """Refuses a free-text value that could print as a forged line or restyle a terminal."""
    return cel(f"!self.matches(r'{CONTROL_CHARACTERS_RE2}')", NO_CONTROL_CHARACTERS)


def text_field(description: str, max_length: int, default: Any = ..., min_length: int | None = None) -> Any:
    """Free text a user or vendor writes (names, versions, statements): one line, printable."""
    return Field(
        default=default,
        min_length=min_length,
        max_length=max_length,
        description=description,
        json_schema_extra=validations(no_control_characters()),
    )


#: One item of a list of free-text values (labels and the like).
TextItem = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=validations(no_control_characters()))]


def quantity_field(description: str, default: str | None = None, maximum: str | None = None) -> Any:
    """A Kubernetes resource quantity such as ``500m``, ``4Gi``, checked by the API server.

    Zero and negative amounts are refused: a zero limit starves the container and a
    negative one is meaningless, whether it is a request or a policy's maximum.
    """
    # Echoed only once isQuantity holds: a quantity has only [0-9a-zA-Z.+-], at most 32 of them.
    rules = [
        cel("isQuantity(self)", "must be a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi"),
        cel(
            "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
            "must be greater than zero",
            message_expression="'must be greater than zero, not ' + self",
        ),
    ]
    if maximum:
        rules.append(
            cel(
                f"!isQuantity(self) || quantity(self).compareTo(quantity('{maximum}')) <= 0",
                f"must be at most {maximum}",
                message_expression=f"'must be at most {maximum}, not ' + self",
            )
        )
    return Field(default=default, max_length=32, description=description, json_schema_extra=validations(*rules))


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=64, description="Condition type, e.g. Ready, Admitted, Isolated.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=128, description="CamelCase reason code.")
    message: str = Field(default="", max_length=4096, description="Human-readable explanation.")
    last_transition_time: datetime | None = Field(default=None, description="When the status last changed.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition reflects.")


class ObjectReference(Model):
    """A reference to another Lightbox object in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="Name of the referenced object in the same namespace.",
    )


class VolumeLocation(Model):
    """Where a tree of files lives: a PersistentVolumeClaim and a path inside it."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN, description="PersistentVolumeClaim name."
    )
    # Written one way only, so that two locations can be compared as text (the
    # Dataset's ground truth must never lie inside or around its studies): no
    # `./x`, `x/`, `x//y`, `x/../x` or `/` spellings of the same folder.
    sub_path: str = Field(
        default="",
        max_length=1024,
        description="Relative path inside the claim, normalised: segments separated by single '/', "
        "no leading or trailing '/', no '.' or '..' segments ('' for the claim's root).",
        json_schema_extra=validations(
            no_control_characters(),
            cel(
                "self == '' || self.matches(r'^[^/]+(/[^/]+)*$')",
                "must be a relative path without a leading or trailing '/' or '//' ('' for the claim's root)",
            ),
            cel(
                "!self.split('/').exists(p, p == '..' || p == '.')",
                "must be a relative path without '.' or '..' segments ('' for the claim's root)",
            ),
        ),
    )


class Toleration(Model):
    """A pod toleration, so sandbox pods can land on tainted GPU nodes."""

    key: str = text_field("Taint key; empty with Exists matches all taints.", max_length=316, default="")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str = text_field("Taint value for Equal.", max_length=63, default="")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, ge=0, description="For NoExecute: how long to stay bound.")


class KubeObject(Model):
    """Common envelope of a custom resource. Subclasses set the class-level CRD facts."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    scope: ClassVar[Literal["Namespaced", "Cluster"]]
    printer_columns: ClassVar[tuple[dict[str, Any], ...]]

    api_version: Literal["lightbox.dev/v1alpha1"] = Field(default="lightbox.dev/v1alpha1", alias="apiVersion")
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


def age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

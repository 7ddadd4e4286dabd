"""Operator settings: flags with environment fallbacks, one frozen object passed around.

Every knob a cluster administrator might turn without a code change lives here,
so handlers and builders never read the environment themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# A placeholder digest: real deployments pin the image they installed (the Helm
# chart sets LIGHTBOX_TRUSTED_IMAGE); the development runner maps the repository
# to the local `lightbox` command whatever the digest.
DEFAULT_TRUSTED_IMAGE = "ghcr.io/lightbox-health/lightbox@sha256:" + "0" * 64
DEFAULT_METRICS_PORT = 9090
# A well-known outside address: in an isolated namespace it must not answer.
DEFAULT_OUTSIDE_ADDRESS = "1.1.1.1:443"
DEFAULT_CLUSTER_DNS = "10.96.0.10:53"


@dataclass(frozen=True)
class TrustedResources:
    """Requests = limits for the trusted steps (stage, score, probe, verify)."""

    cpu: str = "1"
    memory: str = "2Gi"
    ephemeral_storage: str = "1Gi"

    def as_dict(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "ephemeral-storage": self.ephemeral_storage}


@dataclass(frozen=True)
class OperatorConfig:
    trusted_image: str = DEFAULT_TRUSTED_IMAGE
    metrics_port: int = DEFAULT_METRICS_PORT
    namespaces: tuple[str, ...] = ()
    # Where the probe looks for the API server; None means the operator's own API URL.
    probe_api_server: str | None = None
    probe_dns: str = DEFAULT_CLUSTER_DNS
    probe_outside: str = DEFAULT_OUTSIDE_ADDRESS
    probe_timeout_seconds: float = 2.0
    # The stage step's in-pod check: consecutive silent rounds it needs before the vendor
    # may start, and how long it waits for a policy engine to catch up with a new pod.
    isolation_check_rounds: int = 3
    isolation_check_bound_seconds: float = 30.0
    verify_deadline_seconds: int = 3600
    # Extra time the Job gets over the vendor's timeout for staging and scoring;
    # the pod's own deadline is the algorithm timeout.
    job_deadline_slack_seconds: int = 600
    resync_seconds: float = 30.0
    workers: int = 8
    trusted_resources: TrustedResources = field(default_factory=TrustedResources)
    # The audit trail's own namespace, which neither deleting a run namespace nor
    # `helm uninstall` removes (the chart keeps it); docs/audit.md.
    audit_namespace: str = "lightbox-audit"
    # Test hook: exit the process abruptly at a named point (restart-safety tests).
    crash_at: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> OperatorConfig:
        env = os.environ
        values: dict[str, object] = {}
        if env.get("LIGHTBOX_TRUSTED_IMAGE"):
            values["trusted_image"] = env["LIGHTBOX_TRUSTED_IMAGE"]
        if env.get("LIGHTBOX_METRICS_PORT"):
            values["metrics_port"] = int(env["LIGHTBOX_METRICS_PORT"])
        if env.get("LIGHTBOX_NAMESPACES"):
            values["namespaces"] = tuple(n for n in env["LIGHTBOX_NAMESPACES"].split(",") if n)
        if env.get("LIGHTBOX_PROBE_API_SERVER"):
            values["probe_api_server"] = env["LIGHTBOX_PROBE_API_SERVER"]
        if env.get("LIGHTBOX_PROBE_DNS"):
            values["probe_dns"] = env["LIGHTBOX_PROBE_DNS"]
        if env.get("LIGHTBOX_PROBE_OUTSIDE"):
            values["probe_outside"] = env["LIGHTBOX_PROBE_OUTSIDE"]
        if env.get("LIGHTBOX_ISOLATION_CHECK_BOUND_SECONDS"):
            values["isolation_check_bound_seconds"] = float(env["LIGHTBOX_ISOLATION_CHECK_BOUND_SECONDS"])
        if env.get("LIGHTBOX_AUDIT_NAMESPACE"):
            values["audit_namespace"] = env["LIGHTBOX_AUDIT_NAMESPACE"]
        if env.get("LIGHTBOX_OPERATOR_CRASH_AT"):
            values["crash_at"] = env["LIGHTBOX_OPERATOR_CRASH_AT"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

"""``lightbox operator``: run the Lightbox operator against the current kubeconfig.

Also ``python -m lightbox.operator``. Every flag has an environment fallback
(``LIGHTBOX_*``) so the Helm chart can configure it without a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from types import ModuleType

from lightbox.operator.config import OperatorConfig
from lightbox.operator.leader import LeaseSettings, default_identity, default_namespace


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightbox operator", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="namespace to watch (repeatable; env LIGHTBOX_NAMESPACES, comma-separated); default: all",
    )
    p.add_argument(
        "--trusted-image", help="image of the trusted steps (stage, score, probe, verify); env LIGHTBOX_TRUSTED_IMAGE"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus metrics port, 0 for any free one, -1 for none; env LIGHTBOX_METRICS_PORT (default 9090)",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG or ~/.kube/config)")
    p.add_argument(
        "--probe-api-server", help="address the isolation probe tries for the API server (default: the operator's)"
    )
    p.add_argument("--probe-dns", help="cluster DNS server the probe tries (default 10.96.0.10:53)")
    p.add_argument("--probe-outside", help="outside address the probe tries (default 1.1.1.1:443)")
    p.add_argument(
        "--audit-namespace", help="namespace of the audit trail; env LIGHTBOX_AUDIT_NAMESPACE (default lightbox-audit)"
    )
    p.add_argument("--workers", type=int, help="concurrent reconciliations (default 8)")
    p.add_argument(
        "--health-port",
        type=int,
        help="port of kopf's liveness endpoint /healthz, served on the operator's event loop (so it stops answering "
        "when the loop hangs, unlike /metrics); env LIGHTBOX_HEALTH_PORT; default: none",
    )
    p.add_argument(
        "--leader-elect",
        action="store_true",
        default=None,
        help="run as one of several replicas: act only while holding a coordination.k8s.io Lease (docs/ha.md); env "
        "LIGHTBOX_LEADER_ELECT=true",
    )
    p.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease; env LIGHTBOX_LEADER_ELECTION_NAMESPACE; default: the pod's own namespace",
    )
    p.add_argument(
        "--leader-identity",
        help="this replica's name in the Lease; env LIGHTBOX_LEADER_IDENTITY; default: hostname (the pod's name) and "
        "pid",
    )
    p.add_argument("--verbose", "-v", action="store_true")
    return p


def leader_settings(args: argparse.Namespace, env: Mapping[str, str]) -> LeaseSettings | None:
    """The Lease this replica competes for, or None when leader election is off (one replica)."""
    raw = env.get("LIGHTBOX_LEADER_ELECT", "")
    if args.leader_elect is None and raw.lower() not in {"", "0", "false", "1", "true"}:
        raise SystemExit(f"LIGHTBOX_LEADER_ELECT must be true or false, got {raw!r}")
    if not (args.leader_elect or raw.lower() in {"1", "true"}):
        return None
    namespace = args.leader_election_namespace or env.get("LIGHTBOX_LEADER_ELECTION_NAMESPACE") or default_namespace()
    if not namespace:
        raise SystemExit(
            "--leader-elect needs the Lease's namespace outside a pod: --leader-election-namespace "
            "or LIGHTBOX_LEADER_ELECTION_NAMESPACE"
        )
    identity = args.leader_identity or env.get("LIGHTBOX_LEADER_IDENTITY") or default_identity()
    return LeaseSettings(namespace=namespace, identity=identity)


def liveness_endpoint(port: int | None) -> str | None:
    """kopf's liveness URL for ``port``; None (no endpoint) when unset."""
    if port is None:
        raw = os.environ.get("LIGHTBOX_HEALTH_PORT", "")
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            raise SystemExit(f"LIGHTBOX_HEALTH_PORT must be a port number 1-65535, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise SystemExit(f"--health-port must be a port number 1-65535, got {port}")
    # All interfaces: the kubelet probes the pod IP, not loopback.
    return f"http://0.0.0.0:{port}/healthz"


def load_handlers() -> ModuleType:
    """Import kopf and register the handlers, without the client packages' generated code (lean)."""
    from lightbox.operator import lean

    lean.keep_out()
    from lightbox.operator import handlers

    return handlers


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    health = liveness_endpoint(args.health_port)
    leader = leader_settings(args, os.environ)
    load_handlers()
    import kopf

    if args.kubeconfig:
        # kopf logs in through the `kubernetes` package, which reads $KUBECONFIG.
        os.environ["KUBECONFIG"] = args.kubeconfig
    config = OperatorConfig.from_env(
        trusted_image=args.trusted_image,
        metrics_port=args.metrics_port,
        namespaces=tuple(args.namespace) or None,
        probe_api_server=args.probe_api_server,
        probe_dns=args.probe_dns,
        probe_outside=args.probe_outside,
        workers=args.workers,
        audit_namespace=args.audit_namespace,
    )
    kopf.configure(verbose=args.verbose)
    # Its debug lines (request bodies, credential loading) drown what the operator decided.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every watch event handled ("Handler ... succeeded"): thousands per run burst.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        memo=kopf.Memo(config=config, kubeconfig=args.kubeconfig, leader=leader),
        liveness_endpoint=health,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

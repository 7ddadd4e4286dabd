"""``lightbox operator``: run the Lightbox operator against the current kubeconfig.

Also ``python -m lightbox.operator``. Every flag has an environment fallback
(``LIGHTBOX_*``) so the Helm chart can configure it without a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lightbox.operator.config import OperatorConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightbox operator", description=__doc__.split("\n\n")[0])
    p.add_argument("--namespace", "-n", action="append", default=[], help="namespace to watch (repeatable; env LIGHTBOX_NAMESPACES, comma-separated); default: all")
    p.add_argument("--trusted-image", help="image of the trusted steps (stage, score, probe, verify); env LIGHTBOX_TRUSTED_IMAGE")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port, 0 for any free one, -1 for none; env LIGHTBOX_METRICS_PORT (default 9090)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--probe-api-server", help="address the isolation probe tries for the API server (default: the operator's)")
    p.add_argument("--probe-dns", help="cluster DNS server the probe tries (default 10.96.0.10:53)")
    p.add_argument("--probe-outside", help="outside address the probe tries (default 1.1.1.1:443)")
    p.add_argument("--audit-namespace", help="namespace of the audit trail; env LIGHTBOX_AUDIT_NAMESPACE (default lightbox-audit)")
    p.add_argument("--workers", type=int, help="concurrent reconciliations (default 8)")
    p.add_argument("--health-port", type=int, help="port of kopf's liveness endpoint /healthz, served on the operator's event loop (so it stops answering when the loop hangs, unlike /metrics); env LIGHTBOX_HEALTH_PORT; default: none")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    health = liveness_endpoint(args.health_port)
    import kopf

    from lightbox.operator import handlers  # noqa: F401  (registers the handlers)

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
    # One line per API request drowns what the operator decided.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every watch event handled ("Handler ... succeeded"): thousands per run burst.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        memo=kopf.Memo(config=config, kubeconfig=args.kubeconfig),
        liveness_endpoint=health,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

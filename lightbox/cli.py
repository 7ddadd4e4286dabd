"""The `lightbox` command: one entry point, one module per subcommand.

Each subcommand module exposes ``main(argv: list[str]) -> int`` and owns its
own argument parser, so importing the CLI stays cheap and a subcommand's heavy
dependencies (numpy, kopf, the Kubernetes client) load only when it runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("lightbox.operator.crdgen", "write crds/*.yaml from the API models (--check: fail on drift)"),
    "operator": ("lightbox.operator.main", "run the operator against the current kubeconfig"),
    "control-plane": ("lightbox.devtools.controlplane", "start/stop a local etcd + kube-apiserver (development)"),
    "node": ("lightbox.devtools.node", "start/stop a local control plane plus a real node (root; containerd, kubelet)"),
    "local-runner": ("lightbox.devtools.localrunner", "run sandbox pods as local processes (development kubelet)"),
    "demo": ("lightbox.devtools.demo", "end-to-end demo on a local control plane"),
    "report": (
        "lightbox.report",
        "a Validation's report (Markdown; --html FILE: HTML with plots): device, data, protocol, runs, audit trail",
    ),
    "audit": (
        "lightbox.auditcmd",
        "the audit trail: export (jsonl|csv), verify the hash chains (file or --cluster), prune",
    ),
    "evidence": (
        "lightbox.evidencecmd",
        "a region's ed25519 key (keygen) and a run's signed sufficient statistics (export)",
    ),
    "federate": (
        "lightbox.federate",
        "verify signed evidence of several regions; pooled AUC, sensitivity, specificity, I², forest plot",
    ),
    "deid": (
        "lightbox.sandbox.deid.cli",
        "de-identify DICOM (PS3.15 Annex E) or verify a tree: deid SRC DST | deid verify DIR",
    ),
    "vendor": ("lightbox.sandbox.vendorcheck", "vendor tools: vendor check -- COMMAND..."),
    "stage": ("lightbox.sandbox.stager", "trusted staging step inside a sandbox pod"),
    "score": ("lightbox.sandbox.scorer", "trusted scoring step inside a sandbox pod"),
    "probe": ("lightbox.sandbox.probe", "network isolation probe inside a sandbox namespace"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lightbox COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lightbox: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""A real node beside the local control plane: containerd, kubelet, kube-scheduler, kube-proxy, kube-router.

``lightbox node up`` starts the control plane (devtools/controlplane.py, bound to
the node's address) and one node on this machine; ``lightbox node down`` stops
everything and puts the host back as it was (sysctls, iptables, ipsets, links,
network namespaces, mounts, cgroups). Needs root and Linux; the Debian packages
are installed when missing (devtools/node_packages.py).

What runs, and why:

- containerd (own root/state/socket, CRI, runc, the bridge CNI plugin) and the
  kubelet (identity ``system:node:lightbox-node`` under the Node authorizer,
  serving TLS on the node address so the API server reaches it for logs);
- kube-scheduler, so pods are placed by the real scheduler (GPU capacity,
  taints, resources);
- kube-proxy in iptables mode: the operator pod reaches the API server through
  the ``kubernetes`` Service like in any cluster (kube-router's service proxy
  needs IPVS, absent from this kernel);
- kube-router, firewall only: NetworkPolicy enforcement. v2.1.0, a test fixture
  with known advisories, never shipped. It protects a new pod 1-4 s after the pod
  gets its address: the in-pod isolation check is what a run relies on.

The node's address (``NODE_IP``) is put on the loopback interface: an address
of this machine, reached by pods through their gateway, never another host.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightbox.devtools import binaries as _binaries
from lightbox.devtools import certs as _certs
from lightbox.devtools import node_config as cfg
from lightbox.devtools import node_host as host
from lightbox.devtools import node_packages as packages
from lightbox.devtools import node_pause as images
from lightbox.devtools import node_pki
from lightbox.devtools.controlplane import (
    ControlPlane,
    ControlPlaneError,
    _proc_alive,
    _proc_belongs,
    _tail,
    _write_private,
    free_port,
    render_kubeconfig,
    stop_pids,
)

DEFAULT_DIR = Path(".lightbox") / "node"
#: One node per machine (one bridge, one node address): who has it.
ACTIVE_MARKER = Path("/run/lightbox-node.json")
NODE_COMPONENTS = ("containerd", "kubelet", "kube-scheduler", "kube-proxy", "kube-router")

Log = Callable[[str], None]


class NodeError(RuntimeError):
    """The node could not be started or stopped; the message says why (and names the log)."""


class NodeUnavailable(NodeError):
    """This machine cannot run a real node (not root, not Linux, no cgroups); the message says what is missing."""


def _default_log(message: str) -> None:
    print(f"[lightbox] {message}", file=sys.stderr, flush=True)


def unavailable_reason() -> str | None:
    """Why a real node cannot run here (None when it can; packages are installed on demand)."""
    if sys.platform != "linux":
        return f"a real node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a real node needs root (containerd, iptables, mounts); run as root"
    if not Path("/sys/fs/cgroup").is_dir():
        return "a real node needs cgroups mounted at /sys/fs/cgroup"
    missing = packages.missing_packages()
    if missing and shutil.which("apt-get") is None:
        return f"Debian packages missing and no apt-get to install them: {', '.join(missing)}"
    return None


def node_cache_dir() -> Path:
    return _binaries.cache_root() / "node"


@dataclasses.dataclass
class _Proc:
    name: str
    pid: int
    log: Path
    proc: subprocess.Popen | None = None


class Node:
    """Control plane + one real node; all state in ``workdir`` (control plane in ``workdir/control-plane``)."""

    def __init__(self, workdir: Path | str = DEFAULT_DIR, *, detach: bool = False, timeout: float = 180.0,
                 log: Log | None = None) -> None:
        self.workdir = Path(workdir).absolute()
        self.detach = detach
        self.timeout = timeout
        self._log = log or _default_log
        self.paths = cfg.NodePaths(self.workdir, node_cache_dir() / "containerd-root")
        self.control_plane = ControlPlane(
            self.workdir / "control-plane", detach=detach, log=self._log, host=cfg.NODE_IP,
            authorization_mode="Node,RBAC",
            controllers=(*_default_controllers(), *cfg.NODE_CONTROLLERS),
            controller_manager_args=cfg.controller_manager_args(service_cidr=_certs.SERVICE_CLUSTER_IP_RANGE),
            apiserver_args=cfg.apiserver_args(
                kubelet_client_cert=self.workdir / "control-plane" / "pki" / "admin.crt",
                kubelet_client_key=self.workdir / "control-plane" / "pki" / "admin.key",
                ca_file=self.workdir / "control-plane" / "pki" / "ca.crt"),
        )
        self.procs: dict[str, _Proc] = {}
        self.start_seconds: float | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def name(self) -> str:
        return cfg.NODE_NAME

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ start

    def start(self) -> Node:
        reason = unavailable_reason()
        if reason:
            raise NodeUnavailable(reason)
        other = active_node()
        if other is not None and other != self.workdir:
            raise NodeError(f"a node is already running from {other} (one per machine); "
                            f"stop it first: lightbox node down --dir {other}")
        if other == self.workdir:
            self.stop()  # leftovers of a crashed run in the same directory
        packages.ensure_packages(self._log)
        bins = _binaries.ensure_binaries(log=self._log)
        nbins = _binaries.ensure_node_binaries(log=self._log)
        pause_archive = images.ensure_pause_archive(_binaries.cache_root(), self._log)

        t0 = time.monotonic()
        self._reset_workdir()
        before = host.snapshot()
        self.paths.host_snapshot.write_text(before.to_json())
        _write_private(ACTIVE_MARKER, json.dumps({"workdir": str(self.workdir)}) + "\n")
        try:
            self._prepare_host()
            self.control_plane._binaries = bins
            self.control_plane.start()
            self._write_configs()
            self._start_containerd()
            images.import_archive(self.paths.containerd_socket, pause_archive, cfg.PAUSE_IMAGE, log=self._log)
            self._start_kubelet(nbins)
            # kube-router reads the node's podCIDR at start: wait for the node-ipam controller.
            self._wait_node(lambda node: bool(node.spec.pod_cidr), f"node {cfg.NODE_NAME} registered with a podCIDR")
            self._start_scheduler(nbins)
            self._start_kube_proxy(nbins)
            self._start_kube_router(nbins)
            self._wait_node(_ready_untainted, f"node {cfg.NODE_NAME} Ready and untainted")
        except BaseException:
            self.stop(grace=3)
            raise
        self.start_seconds = time.monotonic() - t0
        self._write_state()
        self._log(f"node {cfg.NODE_NAME} Ready (containerd, kubelet, kube-scheduler, kube-proxy, kube-router) "
                  f"in {self.start_seconds:.1f}s; KUBECONFIG={self.kubeconfig}; logs {self.paths.logs}")
        return self

    def _reset_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        leftovers = host.mounts_under(Path("/proc/self/mountinfo").read_text(), [self.workdir])
        if leftovers:
            raise NodeError(f"{self.workdir} still has mounts ({leftovers[0]} ...): run lightbox node down --dir "
                            f"{self.workdir}")
        for sub in ("containerd-state", "cni", "kubelet", "pod-logs", "pki", "logs"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        self.paths.logs.mkdir(parents=True)
        self.paths.containerd_root.mkdir(parents=True, exist_ok=True)
        (self.workdir / ".gitignore").write_text("*\n")

    def _prepare_host(self) -> None:
        if f"{cfg.NODE_IP}/32" not in host._loopback_addrs():
            _check(["ip", "addr", "add", f"{cfg.NODE_IP}/32", "dev", "lo"], "adding the node address to lo")
        for args in cfg.forward_rules():
            _check(["iptables", "-w", *args], "installing the pod-egress rule")

    def _write_configs(self) -> None:
        cp_pki = self.control_plane.pki
        npki = node_pki.generate_node_pki(cp_pki, self.paths.pki, node_name=cfg.NODE_NAME, node_ip=cfg.NODE_IP)
        self.paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.paths.cni_conf_dir / "10-lightbox.conflist").write_text(
            cfg.render_cni_conflist(ipam_dir=self.workdir / "cni" / "ipam"))
        self.paths.containerd_config.write_text(cfg.render_containerd_config(self.paths))
        assert self.control_plane.url
        _write_private(self.paths.kubelet_kubeconfig, render_kubeconfig(
            self.control_plane.url, cp_pki.ca_crt, npki.client_crt, npki.client_key,
            user=node_pki.node_user(cfg.NODE_NAME)))
        # The standard port: the in-pod isolation check knocks on the node's kubelet port.
        self._kubelet_port, self._kubelet_healthz = cfg.KUBELET_PORT, free_port()
        self.paths.kubelet_config.write_text(cfg.render_kubelet_config(
            self.paths, ca_file=cp_pki.ca_crt, tls_cert=npki.serving_crt, tls_key=npki.serving_key,
            port=self._kubelet_port, healthz_port=self._kubelet_healthz))
        self._proxy_healthz = free_port()
        self.paths.kube_proxy_config.write_text(cfg.render_kube_proxy_config(
            kubeconfig=self.kubeconfig, healthz_port=self._proxy_healthz, metrics_port=free_port()))

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log_path = self.paths.logs / f"{name}.log"
        with open(log_path, "ab") as fh:
            fh.write(f"# {' '.join(argv)}\n".encode())
            fh.flush()
            from lightbox.devtools.controlplane import _set_pdeathsig
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=self.workdir, start_new_session=True, close_fds=True,
                                    preexec_fn=None if self.detach else _set_pdeathsig)
        p = _Proc(name, proc.pid, log_path, proc)
        self.procs[name] = p
        self._write_state()
        return p

    def _wait(self, p: _Proc, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        last = ""
        while True:
            if p.proc is not None and p.proc.poll() is not None:
                raise NodeError(f"{p.name} exited with code {p.proc.returncode} while waiting for {what}. "
                                f"Last lines of {p.log}:\n{_tail(p.log)}")
            try:
                if ready():
                    return
            except Exception as exc:  # noqa: BLE001 - not yet
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise NodeError(f"{what}: not within {timeout or self.timeout:.0f}s"
                                f"{' (last: ' + last + ')' if last else ''}. Last lines of {p.log}:\n{_tail(p.log)}")
            time.sleep(0.2)

    def _start_containerd(self) -> None:
        p = self._spawn("containerd", ["containerd", "--config", str(self.paths.containerd_config)])
        self._wait(p, "containerd's socket", lambda: subprocess.run(
            [*images.ctr_base(self.paths.containerd_socket), "version"], capture_output=True,
            timeout=10).returncode == 0, timeout=60)

    def _start_kubelet(self, nbins: _binaries.NodeBinaries) -> None:
        argv = [
            str(nbins.kubelet),
            f"--config={self.paths.kubelet_config}",
            f"--kubeconfig={self.paths.kubelet_kubeconfig}",
            f"--root-dir={self.paths.kubelet_root}",
            f"--hostname-override={cfg.NODE_NAME}",
            f"--node-ip={cfg.NODE_IP}",
            "--v=1",
        ]
        # containerd answers `ctr version` before its CRI plugin has finished initialising, and the kubelet
        # exits at once on that answer instead of retrying (a CI run lost its node start to it).
        # Only the kubelet speaks CRI here (no crictl, no grpc module), so it is the probe: respawn it
        # while containerd says "not initialized yet", and fail on anything else.
        deadline = time.monotonic() + self.timeout
        while True:
            p = self._spawn("kubelet", argv)
            try:
                self._wait(p, "the kubelet's health",
                           lambda: _http_ok(f"http://127.0.0.1:{self._kubelet_healthz}/healthz"))
                return
            except NodeError:
                exited = p.proc is not None and p.proc.poll() is not None
                if not (exited and cri_not_ready_yet(p.log.read_text(errors="replace"))) \
                        or time.monotonic() > deadline:
                    raise
                self._log("containerd's CRI plugin is not initialised yet; starting the kubelet again")
                time.sleep(1.0)

    def _start_scheduler(self, nbins: _binaries.NodeBinaries) -> None:
        port = free_port()
        p = self._spawn("kube-scheduler", [
            str(nbins.kube_scheduler), f"--kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={port}", "--leader-elect=false", f"--cert-dir={self.workdir / 'scheduler-certs'}",
        ])
        self._wait(p, "kube-scheduler's health", lambda: _https_ok(f"https://127.0.0.1:{port}/healthz"), timeout=60)

    def _start_kube_proxy(self, nbins: _binaries.NodeBinaries) -> None:
        p = self._spawn("kube-proxy", [str(nbins.kube_proxy), f"--config={self.paths.kube_proxy_config}", "--v=1"])
        # /healthz answers 200 from the start, before any sync: ready is when the `kubernetes` Service
        # leads to this API server in the nat table (what the operator pod connects through).
        assert self.control_plane.url
        endpoint = f"{cfg.NODE_IP}:{self.control_plane.url.rsplit(':', 1)[1]}"
        cluster_ip = str(next(ipaddress.ip_network(_certs.SERVICE_CLUSTER_IP_RANGE).hosts()))
        self._wait(p, f"kube-proxy's rules for the kubernetes Service ({cluster_ip}:443 -> {endpoint})",
                   lambda: _http_ok(f"http://127.0.0.1:{self._proxy_healthz}/healthz") and cfg.service_programmed(
                       _iptables_save("nat"), cluster_ip=cluster_ip, port=443, endpoint=endpoint))

    def _start_kube_router(self, nbins: _binaries.NodeBinaries) -> None:
        p = self._spawn("kube-router", [str(nbins.kube_router), *cfg.kube_router_args(
            kubeconfig=self.kubeconfig, service_cidr=_certs.SERVICE_CLUSTER_IP_RANGE)])
        # Its chains exist before its first policy sync: wait for the sync itself.
        self._wait(p, "kube-router's first NetworkPolicy sync", lambda: cfg.policy_sync_done(_iptables_save("filter")))

    def _wait_node(self, predicate: Callable[[Any], bool], what: str) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(str(self.kubeconfig))
        core = client.CoreV1Api(api)
        try:
            self._wait(self.procs["kubelet"], what, lambda: predicate(core.read_node(cfg.NODE_NAME)))
        finally:
            api.close()

    # ------------------------------------------------------------------ the policy engine, for tests

    @contextlib.contextmanager
    def policy_engine_stopped(self):
        """No NetworkPolicy enforcement inside the block: kube-router stopped and its rules removed.

        Stopping kube-router alone leaves its chains enforcing; a crashed or removed policy
        engine is what the in-pod isolation check must catch. kube-router is restarted after.
        """
        p = self.procs.get("kube-router")
        if p is not None:
            stop_pids([p.pid], grace=5, procs={p.pid: p.proc} if p.proc else None)
            del self.procs["kube-router"]
        host.remove_kube_router_state()
        try:
            yield
        finally:
            self._start_kube_router(_binaries.ensure_node_binaries(log=self._log))
            self._write_state()

    # ------------------------------------------------------------------ state

    def _write_state(self) -> None:
        state = {"components": {n: {"pid": p.pid, "log": str(p.log)} for n, p in self.procs.items()},
                 "control_plane": str(self.control_plane.workdir)}
        _write_private(self.paths.state_file, json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, workdir: Path | str = DEFAULT_DIR, log: Log | None = None) -> Node | None:
        node = cls(workdir, log=log)
        try:
            state = json.loads(node.paths.state_file.read_text())
        except (OSError, ValueError):
            return node if node.paths.host_snapshot.exists() else None
        for name, c in state.get("components", {}).items():
            node.procs[name] = _Proc(name, int(c["pid"]), Path(c["log"]))
        attached = ControlPlane.attach(node.control_plane.workdir, log=log)
        if attached is not None:
            node.control_plane.components = attached.components
            node.control_plane.url, node.control_plane.version = attached.url, attached.version
        return node

    def running(self) -> bool:
        return bool(self.procs) and all(
            (p.proc.poll() is None) if p.proc else (_proc_alive(p.pid) and _proc_belongs(p.pid, self.workdir))
            for p in self.procs.values()) and self.control_plane.running()

    # ------------------------------------------------------------------ stop

    def stop(self, grace: float = 10.0) -> list[str]:
        """Stop everything and restore the host. Idempotent. Returns what still differs from before (empty: clean)."""
        def stop_names(names: tuple[str, ...]) -> None:
            group = [self.procs[n] for n in names if n in self.procs]
            procs = {p.pid: p.proc for p in group if p.proc}
            stop_pids([p.pid for p in group if p.proc or _proc_belongs(p.pid, self.workdir)], grace=grace,
                      procs=procs)

        stop_names(("kube-router", "kube-proxy", "kube-scheduler", "kubelet"))
        if "containerd" in self.procs and self.paths.containerd_socket.exists():
            _remove_all_containers(self.paths.containerd_socket)
        stop_names(("containerd",))
        self.procs.clear()
        self.control_plane.stop(grace=grace)
        other = active_node()
        if other is not None and other != self.workdir:
            # Another node owns the host's bridge, chains and pods: restoring from here would break it.
            self._log(f"the node running from {other} owns the host state; left it alone")
            return []
        before = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            before = host.HostState.from_json(self.paths.host_snapshot.read_text())
        left = host.restore(before, owned_dirs=self.paths.owned_dirs(), shim_needle=str(self.paths.containerd_socket),
                            log=self._log)
        with contextlib.suppress(FileNotFoundError):
            self.paths.state_file.unlink()
        if not left:
            with contextlib.suppress(FileNotFoundError):
                self.paths.host_snapshot.unlink()
            if active_node() == self.workdir:
                with contextlib.suppress(FileNotFoundError):
                    ACTIVE_MARKER.unlink()
        else:
            self._log("the host still differs from before the node started:\n  " + "\n  ".join(left))
        return left


def cri_not_ready_yet(kubelet_log: str) -> bool:
    """Whether the kubelet's last start (the log after its last ``# argv`` line) ended on containerd's CRI
    plugin still initialising, the one failure worth a respawn."""
    last_start = kubelet_log.rsplit("\n# ", 1)[-1]
    return "validate CRI v1 runtime API" in last_start and "server is not initialized yet" in last_start


def _ready_untainted(node) -> bool:
    conds = {c.type: c.status for c in (node.status.conditions or [])}
    return conds.get("Ready") == "True" and not node.spec.taints


def _default_controllers() -> tuple[str, ...]:
    from lightbox.devtools.controlplane import DEFAULT_CONTROLLERS
    return DEFAULT_CONTROLLERS


def active_node() -> Path | None:
    try:
        return Path(json.loads(ACTIVE_MARKER.read_text())["workdir"])
    except (OSError, ValueError, KeyError):
        return None


def _check(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise NodeError(f"{what}: `{' '.join(cmd)}` failed: {(result.stderr or result.stdout).strip()}")


def _iptables_save(table: str) -> str:
    return subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def _https_ok(url: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return r.status == 200


def _remove_all_containers(socket: Path) -> None:
    """Kill and delete every container of the CRI namespace, so the kept containerd root holds images only."""
    ctr = images.ctr_base(socket)

    def ids(kind: str) -> list[str]:
        out = subprocess.run([*ctr, kind, "ls", "-q"], capture_output=True, text=True, timeout=30)
        return out.stdout.split() if out.returncode == 0 else []

    for cid in ids("tasks"):
        subprocess.run([*ctr, "tasks", "kill", "--all", "--signal", "SIGKILL", cid], capture_output=True, timeout=30)
    for cid in ids("tasks"):
        subprocess.run([*ctr, "tasks", "delete", "--force", cid], capture_output=True, timeout=30)
    for cid in ids("containers"):
        subprocess.run([*ctr, "containers", "delete", cid], capture_output=True, timeout=30)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lightbox node",
        description="A local control plane plus one real node (containerd, kubelet, kube-scheduler, kube-proxy, "
                    "kube-router). Needs root; installs the Debian packages it needs.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in [("up", "start detached and print how to use it"),
                        ("down", "stop everything and restore the host (idempotent)"),
                        ("env", "print `export KUBECONFIG=...`"),
                        ("status", "print whether it runs")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"work directory (default ./{DEFAULT_DIR})")
        if name == "up":
            p.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    workdir = args.dir.absolute()

    if args.cmd == "up":
        existing = Node.attach(workdir)
        if existing is not None and existing.running():
            print(f"already running from {workdir}\n  export KUBECONFIG={existing.kubeconfig}")
            return 0
        try:
            node = Node(workdir, detach=True, timeout=args.timeout).start()
        except (NodeError, ControlPlaneError, _binaries.BinaryError, packages.PackageError, images.ImageError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"node {node.name} Ready beside kube-apiserver at {node.control_plane.url}\n"
              f"  export KUBECONFIG={node.kubeconfig}\n  kubectl get nodes\nstop it: lightbox node down"
              f"{'' if workdir == DEFAULT_DIR.absolute() else ' --dir ' + str(workdir)}")
        return 0

    attached = Node.attach(workdir)
    if args.cmd == "down":
        # Nothing recorded: still clean what a crashed run may have left.
        left = (attached if attached is not None else Node(workdir)).stop()
        print(f"stopped the node and control plane in {workdir}"
              + ("" if not left else "; the host still differs:\n  " + "\n  ".join(left)))
        return 0 if not left else 1
    live = attached if attached is not None and attached.running() else None
    if args.cmd == "env":
        if live is None:
            print(f"no node running from {workdir}; start one with: lightbox node up", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={live.kubeconfig}")
        return 0
    if live is None:
        print(f"not running (work directory {workdir})")
        return 1
    print(f"running: node {cfg.NODE_NAME}, kube-apiserver at {live.control_plane.url}")
    for name, proc in live.procs.items():
        print(f"  {name:<16} pid {proc.pid:<8} log {proc.log}")
    for name, c in live.control_plane.components.items():
        print(f"  {name:<16} pid {c.pid:<8} log {c.log}")
    print(f"  KUBECONFIG={live.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

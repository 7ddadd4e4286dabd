"""A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.

The envtest approach, with the controller manager added so that Jobs create
Pods, garbage collection and namespace deletion work and every namespace gets
its ``default`` ServiceAccount. There is no node: Pods stay Pending unless a
(development) kubelet such as ``lightbox local-runner`` runs them.

Python API (tests, demo)::

    with ControlPlane(tmp_path / "cp") as cp:
        client = kubernetes.config.new_client_from_config(str(cp.kubeconfig))

CLI (``lightbox control-plane``)::

    lightbox control-plane up       # start detached, print how to use it
    eval "$(lightbox control-plane env)"
    lightbox control-plane status
    lightbox control-plane down

Every port is picked free at start; all state lives in the work directory
(default ``./.lightbox/control-plane``): ``kubeconfig``, ``state.json`` (pids,
ports, URL), ``pki/``, ``etcd/`` and ``logs/<component>.log``. Each ``up`` starts
from an empty etcd.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from lightbox.devtools import binaries as _binaries
from lightbox.devtools import certs as _certs

DEFAULT_DIR = Path(".lightbox") / "control-plane"

#: kube-controller-manager controllers that make a node-less cluster behave:
#: Jobs/CronJobs create Pods, owners' deletion cascades, namespaces terminate,
#: ServiceAccounts and the kube-root-ca.crt ConfigMap appear in every namespace.
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "resourcequota-controller",
    "clusterrole-aggregation-controller",
    # PVCs/PVs carry protection finalizers (admission adds them); without these
    # controllers deleting a claim, and so its namespace, hangs forever.
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "persistentvolume-binder-controller",
)

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
STATE_FILE = "state.json"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

Log = Callable[[str], None]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (the message includes the failing component's log tail)."""


def _default_log(message: str) -> None:
    print(f"[lightbox] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when the starting process dies (no orphans after a crash)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --------------------------------------------------------------------------- processes


def _proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _proc_belongs(pid: int, workdir: Path) -> bool:
    """True when ``pid`` is still one of ours: its command line mentions the work directory.

    Guards ``down`` against a recycled pid after the component died on its own.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return _proc_alive(pid)  # no /proc: trust the pid
    return str(workdir) in cmdline


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)   # each component leads its own session/process group
        except (ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_pids(pids: Sequence[int], *, grace: float = 10.0, procs: dict[int, subprocess.Popen] | None = None) -> None:
    """SIGTERM the pids, wait up to ``grace`` seconds, then SIGKILL what is left."""
    procs = procs or {}

    def alive(pid: int) -> bool:
        if pid in procs:
            return procs[pid].poll() is None
        return _proc_alive(pid)

    live = [p for p in pids if alive(p)]
    for pid in live:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if alive(p)]
    for pid in live:
        _signal(pid, signal.SIGKILL)
    for pid in live:
        end = time.monotonic() + 5
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
    for proc in procs.values():
        with contextlib.suppress(Exception):
            proc.wait(timeout=1)


# --------------------------------------------------------------------------- kubeconfig


def render_kubeconfig(server: str, ca_crt: Path, client_crt: Path, client_key: Path, *, user: str = "lightbox-admin",
                      name: str = "lightbox") -> str:
    """A self-contained kubeconfig (certificates embedded) for kubectl and the Python client."""
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_crt)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(client_crt),
                                          "client-key-data": b64(client_key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the control plane


@dataclasses.dataclass
class _Component:
    name: str
    pid: int
    port: int
    log: Path
    proc: subprocess.Popen | None = None


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, all state in ``workdir``.

    ``start()`` returns once /readyz is ok, the controller manager is healthy and
    the ``default`` ServiceAccount exists; ``stop()`` SIGTERMs the components
    (SIGKILL after ``grace`` seconds). With ``detach=True`` the components
    outlive this process (``lightbox control-plane up``); otherwise they are
    also killed by the kernel if this process dies without stopping them.
    """

    def __init__(
        self,
        workdir: Path | str = DEFAULT_DIR,
        *,
        binaries: _binaries.Binaries | None = None,
        detach: bool = False,
        timeout: float = 120.0,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        authorization_mode: str = "RBAC",
        log: Log | None = None,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.detach = detach
        self.timeout = timeout
        self.controllers = tuple(controllers)
        self.apiserver_args = tuple(apiserver_args)
        self.controller_manager_args = tuple(controller_manager_args)
        #: Address the apiserver binds and advertises. A real node's pods reach it
        #: through the `kubernetes` Service, whose endpoint cannot be loopback.
        self.host = host
        self.authorization_mode = authorization_mode
        self._binaries = binaries
        self._log = log or _default_log
        self.components: dict[str, _Component] = {}
        self.url: str | None = None
        self.version: str | None = None
        #: Seconds the last start() took (binaries already present).
        self.start_seconds: float | None = None

    # paths
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    @property
    def pki(self) -> _certs.Pki:
        return _certs.Pki(self.workdir / "pki")

    @property
    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    @property
    def binaries(self) -> _binaries.Binaries | None:
        """The binaries in use (set by start() when not given)."""
        return self._binaries

    @property
    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.components.items()}

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ControlPlane({str(self.workdir)!r}, url={self.url!r})"

    # ------------------------------------------------------------------ start

    def start(self) -> ControlPlane:
        existing = ControlPlane.attach(self.workdir)
        if existing is not None and existing.running():
            raise ControlPlaneError(
                f"a control plane is already running from {self.workdir} ({existing.url}); "
                f"stop it first: lightbox control-plane down --dir {self.workdir}")
        if existing is not None:
            existing.stop()  # leftovers of a crashed run

        bins = self._binaries or _binaries.ensure_binaries(log=self._log)
        self._binaries = bins
        t0 = time.monotonic()
        self._reset_workdir()
        pki = _certs.generate(self.pki.dir, extra_ips=() if self.host == "127.0.0.1" else (self.host,))
        try:
            self._start_etcd(bins)
            self._start_apiserver(bins, pki)
            self._start_controller_manager(bins, pki)
            self._wait_default_serviceaccount()
        except BaseException:
            self.stop(grace=3)
            raise
        self.start_seconds = time.monotonic() - t0
        self._write_state()
        self._log(f"kube-apiserver {self.version} ready at {self.url} "
                  f"(started in {self.start_seconds:.1f}s; kubeconfig {self.kubeconfig}; logs {self.logs_dir})")
        return self

    def _reset_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("etcd", "pki", "logs", "apiserver-certs", "controller-manager-certs"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        for f in ("kubeconfig", "controller-manager.kubeconfig", STATE_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f).unlink()
        self.logs_dir.mkdir()
        # Keep a stray `git add` from picking up keys when the dir sits inside a checkout.
        (self.workdir / ".gitignore").write_text("*\n")

    def _spawn(self, name: str, argv: list[str], port: int) -> _Component:
        log_path = self.logs_dir / f"{name}.log"
        with open(log_path, "ab") as fh:
            fh.write(f"# {' '.join(argv)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True, close_fds=True,
                preexec_fn=None if self.detach else _set_pdeathsig,
            )
        comp = _Component(name, proc.pid, port, log_path, proc)
        self.components[name] = comp
        self._write_state()
        return comp

    def _launch(self, name: str, make_argv: Callable[[], tuple[list[str], int]],
                ready: Callable[[_Component], bool], timeout: float, attempts: int = 3) -> _Component:
        """Start a component and poll ``ready`` until it is; retry on a lost race for a free port."""
        for attempt in range(1, attempts + 1):
            argv, port = make_argv()
            comp = self._spawn(name, argv, port)
            deadline = time.monotonic() + timeout
            last_error = ""
            while True:
                rc = comp.proc.poll() if comp.proc else None
                if rc is not None:
                    tail = _tail(comp.log)
                    if "address already in use" in tail and attempt < attempts:
                        self._log(f"{name}: port taken meanwhile, retrying with another one")
                        del self.components[name]
                        break
                    raise ControlPlaneError(f"{name} exited with code {rc} during start-up. "
                                            f"Last lines of {comp.log}:\n{tail}")
                try:
                    if ready(comp):
                        return comp
                except Exception as exc:  # noqa: BLE001 - not up yet
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"{name} did not become ready within {timeout:.0f}s"
                        f"{' (last probe: ' + last_error + ')' if last_error else ''}. "
                        f"Last lines of {comp.log}:\n{_tail(comp.log)}")
                time.sleep(0.1)
        raise ControlPlaneError(f"{name}: could not get a free port in {attempts} attempts")  # pragma: no cover

    def _start_etcd(self, bins: _binaries.Binaries) -> None:
        data = self.workdir / "etcd"

        def argv() -> tuple[list[str], int]:
            client, peer = free_port(), free_port()
            return [
                str(bins.etcd),
                "--name=lightbox",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=lightbox=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ], client

        def ready(c: _Component) -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{c.port}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._launch("etcd", argv, ready, timeout=min(self.timeout, 60))

    def _apiserver_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def _get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        assert self.url
        try:
            with urllib.request.urlopen(self.url + path, context=self._apiserver_ssl(), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _start_apiserver(self, bins: _binaries.Binaries, pki: _certs.Pki) -> None:
        etcd_url = f"http://127.0.0.1:{self.components['etcd'].port}"

        def argv() -> tuple[list[str], int]:
            port = free_port()
            return [
                str(bins.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--authorization-mode={self.authorization_mode}",
                f"--service-cluster-ip-range={_certs.SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                # Privileged pods pass API validation so that PodSecurity admission
                # (on by default) is what rejects them in restricted namespaces.
                "--allow-privileged=true",
                # 127.0.0.1 is not a valid Endpoints address; nothing in-cluster needs
                # the `kubernetes` Service's endpoints here (there is no node).
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self.apiserver_args,
            ], port

        def ready(c: _Component) -> bool:
            self.url = f"https://{self.host}:{c.port}"
            status, body = self._get("/readyz")
            return status == 200 and body.strip() == b"ok"

        self._launch("kube-apiserver", argv, ready, timeout=self.timeout)
        assert self.url is not None  # ready() set it
        status, body = self._get("/version")
        self.version = json.loads(body).get("gitVersion") if status == 200 else None
        _write_private(self.kubeconfig, render_kubeconfig(self.url, pki.ca_crt, pki.admin_crt, pki.admin_key))
        _write_private(self.workdir / "controller-manager.kubeconfig",
                       render_kubeconfig(self.url, pki.ca_crt, pki.kcm_crt, pki.kcm_key,
                                         user="lightbox-controller-manager"))

    def _start_controller_manager(self, bins: _binaries.Binaries, pki: _certs.Pki) -> None:
        kcfg = self.workdir / "controller-manager.kubeconfig"
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def argv() -> tuple[list[str], int]:
            port = free_port()
            return [
                str(bins.kube_controller_manager),
                f"--kubeconfig={kcfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--controllers={','.join(self.controllers)}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                *self.controller_manager_args,
            ], port

        def ready(c: _Component) -> bool:
            with urllib.request.urlopen(f"https://127.0.0.1:{c.port}/healthz", context=insecure, timeout=2) as r:
                return r.status == 200

        self._launch("kube-controller-manager", argv, ready, timeout=min(self.timeout, 60))

    def _wait_default_serviceaccount(self) -> None:
        """The serviceaccount controller is working once default/default exists."""
        deadline = time.monotonic() + min(self.timeout, 60)
        while True:
            status, _ = self._get("/api/v1/namespaces/default/serviceaccounts/default")
            if status == 200:
                return
            kcm = self.components["kube-controller-manager"]
            if kcm.proc and kcm.proc.poll() is not None:
                raise ControlPlaneError(f"kube-controller-manager exited with code {kcm.proc.returncode}. "
                                        f"Last lines of {kcm.log}:\n{_tail(kcm.log)}")
            if time.monotonic() > deadline:
                raise ControlPlaneError("the default ServiceAccount did not appear: kube-controller-manager is not "
                                        f"working. Last lines of {kcm.log}:\n{_tail(kcm.log)}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ state

    def _write_state(self) -> None:
        state = {
            "url": self.url,
            "version": self.version,
            "kubeconfig": str(self.kubeconfig),
            "components": {n: {"pid": c.pid, "port": c.port, "log": str(c.log)} for n, c in self.components.items()},
            "binaries": self._binaries.as_dict() if self._binaries else {},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_private(self.state_file, json.dumps(state, indent=2) + "\n")

    @classmethod
    def attach(cls, workdir: Path | str = DEFAULT_DIR, log: Log | None = None) -> ControlPlane | None:
        """The control plane recorded in ``workdir/state.json`` (possibly no longer running), or None."""
        cp = cls(workdir, log=log)
        try:
            state = json.loads(cp.state_file.read_text())
        except (OSError, ValueError):
            return None
        cp.url, cp.version = state.get("url"), state.get("version")
        for name, c in state.get("components", {}).items():
            cp.components[name] = _Component(name, int(c["pid"]), int(c["port"]), Path(c["log"]))
        return cp

    def running(self) -> bool:
        """True when every component recorded is alive."""
        return bool(self.components) and all(
            (c.proc.poll() is None) if c.proc else (_proc_alive(c.pid) and _proc_belongs(c.pid, self.workdir))
            for c in self.components.values())

    def ready(self) -> bool:
        if not self.url or not self.running():
            return False
        try:
            status, body = self._get("/readyz", timeout=3)
        except Exception:  # noqa: BLE001
            return False
        return status == 200 and body.strip() == b"ok"

    # ------------------------------------------------------------------ stop

    def stop(self, grace: float = 10.0) -> None:
        """Stop the components (controller manager and apiserver first, then etcd). Idempotent."""
        first = [c for n, c in self.components.items() if n != "etcd"]
        last = [c for n, c in self.components.items() if n == "etcd"]
        for group in (first, last):
            procs = {c.pid: c.proc for c in group if c.proc}
            pids = [c.pid for c in group if c.proc or _proc_belongs(c.pid, self.workdir)]
            stop_pids(pids, grace=grace, procs=procs)
        self.components.clear()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


# --------------------------------------------------------------------------- CLI


def _usage_text(cp: ControlPlane) -> str:
    dir_arg = "" if cp.workdir == DEFAULT_DIR.absolute() else f" --dir {cp.workdir}"
    return "\n".join([
        f"kube-apiserver {cp.version} ready at {cp.url}",
        f"  etcd, kube-apiserver, kube-controller-manager running (pids {', '.join(map(str, cp.pids.values()))}); "
        f"logs in {cp.logs_dir}",
        "use it:",
        f"  export KUBECONFIG={cp.kubeconfig}",
        f"  # or: eval \"$(lightbox control-plane env{dir_arg})\"",
        "  kubectl get namespaces",
        "stop it:",
        f"  lightbox control-plane down{dir_arg}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lightbox control-plane",
        description="A local etcd + kube-apiserver + kube-controller-manager on loopback (development, tests, demo).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in [("up", "start detached and print how to use it"),
                        ("down", "stop it (SIGTERM, SIGKILL after --grace seconds)"),
                        ("env", "print `export KUBECONFIG=...` (use with eval)"),
                        ("status", "print whether it is running and ready")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"work directory (default: ./{DEFAULT_DIR})")
        if name == "up":
            p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
        if name == "down":
            p.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args(argv)
    workdir = args.dir.absolute()

    if args.cmd == "up":
        existing = ControlPlane.attach(workdir)
        if existing is not None and existing.running():
            print(f"already running (from {workdir})")
            print(_usage_text(existing))
            return 0
        cp = ControlPlane(workdir, detach=True, timeout=args.timeout)
        try:
            cp.start()
        except (ControlPlaneError, _binaries.BinaryError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(_usage_text(cp))
        return 0

    attached = ControlPlane.attach(workdir)
    if args.cmd == "down":
        if attached is None:
            print(f"no control plane recorded in {workdir}")
            return 0
        attached.stop(grace=args.grace)
        print(f"stopped the control plane in {workdir}")
        return 0

    live = attached if attached is not None and attached.running() else None
    if args.cmd == "env":
        if live is None:
            print(
                f"no control plane running from {workdir}; start one with: lightbox control-plane up", file=sys.stderr
            )
            return 1
        print(f"export KUBECONFIG={live.kubeconfig}")
        return 0

    # status
    if live is None:
        print(f"not running (work directory {workdir})")
        return 1
    print(f"{'ready' if live.ready() else 'NOT READY'}: kube-apiserver {live.version} at {live.url}")
    for name, c in live.components.items():
        print(f"  {name:<24} pid {c.pid:<8} port {c.port:<6} log {c.log}")
    print(f"  KUBECONFIG={live.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

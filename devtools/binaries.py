"""Cluster binaries: kube-apiserver, kube-controller-manager, etcd (and helm); for a
real node also kubelet, kube-scheduler, kube-proxy, kube-router and the pause binary.

Where they come from, in order:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention): a directory holding
   ``kube-apiserver`` and ``etcd`` and, optionally, ``kube-controller-manager``.
   envtest's archives do not ship kube-controller-manager; when it is missing it
   is built (only it) for the apiserver's version.
2. The cache, ``${XDG_CACHE_HOME:-~/.cache}/lightbox/bin/<name>-<version>/``.
3. A build from the Go module proxy with the installed Go, into that cache.

``go install k8s.io/kubernetes/cmd/kube-apiserver@v1.34.4`` cannot work:
k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go,
...) at v0.0.0 and relies on replace directives that only apply inside its own
repository. A small wrapper module that requires k8s.io/kubernetes and replaces
every staging module with the matching v0.x release builds fine (the approach
of kubernetes-sigs/scheduler-plugins). etcd's server module has replace
directives too, so it gets the same kind of wrapper; helm has none, but uses
one for uniformity.

Layout under the cache root (reused by every checkout on the machine)::

    build/k8s-v1.34.4/go.mod     wrapper module (plus go.sum, tidy.log, build.log)
    bin/k8s-v1.34.4/kube-apiserver, kube-controller-manager
    bin/etcd-v3.6.14/etcd
    bin/helm-v3.21.4/helm
    bin/k8s-v1.34.4/kubelet, kube-scheduler, kube-proxy      (real node)
    bin/kube-router-v2.1.0/kube-router                       (real node, test fixture)
    bin/pause-1/pause                                        (real node's sandbox image)
    go/mod, go/build             GOMODCACHE and GOCACHE for those builds
    locks/<key>.lock             one builder at a time per key

Builds write to a temporary directory next to ``bin/<key>/`` and rename each
finished binary into place, so an interrupted build never leaves a half-written
binary where the cache lookup would trust it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.14"
HELM_VERSION = "v3.21.4"
#: The only kube-router release the module proxy serves here. It has published
#: advisories: it is a NetworkPolicy engine for the real-node test tier, never shipped.
KUBE_ROUTER_VERSION = "v2.1.0"
#: Revision of the pause program below; bump it when the source changes.
PAUSE_VERSION = "1"

#: The staging modules of k8s.io/kubernetes (staging/src/k8s.io/* in the
#: kubernetes repository), each published as k8s.io/<name> at v0.<minor>.<patch>.
STAGING_MODULES: tuple[str, ...] = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
)

KUBE_APISERVER_PKG = "k8s.io/kubernetes/cmd/kube-apiserver"
KUBE_CONTROLLER_MANAGER_PKG = "k8s.io/kubernetes/cmd/kube-controller-manager"
#: Every command the k8s wrapper module names as a tool. One go.mod for all of
#: them, so the node's binaries reuse the control plane's go.sum and build cache.
K8S_TOOLS: tuple[str, ...] = (
    KUBE_APISERVER_PKG,
    KUBE_CONTROLLER_MANAGER_PKG,
    "k8s.io/kubernetes/cmd/kubelet",
    "k8s.io/kubernetes/cmd/kube-scheduler",
    "k8s.io/kubernetes/cmd/kube-proxy",
)
NODE_K8S_BINARIES: tuple[str, ...] = ("kubelet", "kube-scheduler", "kube-proxy")
KUBE_ROUTER_PKG = "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
#: Dependencies of kube-router v2.1.0 raised past published advisories (each
#: still builds with it): docker/docker < 25.0.6 (CVE-2024-41110, CVE-2024-29018).
KUBE_ROUTER_DEPENDENCY_BUMPS: tuple[tuple[str, str], ...] = (
    ("github.com/docker/docker", "v25.0.6+incompatible"),
)
PAUSE_PKG = "lightbox.local/pausebuild"

#: The pod sandbox's process: holds the pod's namespaces until told to stop.
#: Static (CGO_ENABLED=0) so the image needs nothing but this file.
PAUSE_MAIN_GO = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

// pause holds a pod's namespaces. It exits on SIGINT/SIGTERM and reaps
// children when it is PID 1 of a shared process namespace.
func main() {
\tsigs := make(chan os.Signal, 8)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sigs {
\t\tif s == syscall.SIGCHLD {
\t\t\tfor {
\t\t\t\tvar ws syscall.WaitStatus
\t\t\t\tpid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
\t\t\t\tif pid <= 0 || err != nil {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t\tcontinue
\t\t}
\t\tos.Exit(0)
\t}
}
"""
ETCD_PKG = "go.etcd.io/etcd/server/v3"
HELM_PKG = "helm.sh/helm/v3/cmd/helm"

#: Oldest Go that understands the ``tool`` directive used by the wrapper modules.
MIN_GO = (1, 24)

Log = Callable[[str], None]


class BinaryError(RuntimeError):
    """A binary could not be found or built; the message says why and what to do."""


def _default_log(message: str) -> None:
    print(f"[lightbox] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- rendering


def _check_version(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"expected a release version like v1.34.4, got {version!r}")
    return int(m[1]), int(m[2]), int(m[3])


def staging_version(k8s_version: str) -> str:
    """k8s.io/kubernetes v1.34.4 -> its staging modules' release, v0.34.4."""
    _, minor, patch = _check_version(k8s_version)
    return f"v0.{minor}.{patch}"


def _wrapper_gomod(name: str, require: str, tools: Sequence[str], extra: Sequence[str] = ()) -> str:
    """A module that only requires ``require`` and names the commands to build as tools."""
    lines = [
        f"module lightbox.local/{name}",
        "",
        "go 1.24.0",
        "",
        f"require {require}",
        "",
        *extra,
        *_tool_block(tools),
    ]
    return "\n".join(lines) + "\n"


def render_k8s_gomod(version: str = K8S_VERSION, tools: Sequence[str] = K8S_TOOLS) -> str:
    """The wrapper module that builds Kubernetes commands from the module proxy."""
    staging = staging_version(version)
    replaces = [
        "// k8s.io/kubernetes requires its staging modules at v0.0.0 (resolved by",
        "// replace directives inside its own repository); pin the matching releases.",
        "replace (",
        *[f"\tk8s.io/{m} => k8s.io/{m} {staging}" for m in STAGING_MODULES],
        ")",
        "",
    ]
    return _wrapper_gomod("k8sbuild", f"k8s.io/kubernetes {version}", tools, replaces)


def render_etcd_gomod(version: str = ETCD_VERSION) -> str:
    """Wrapper module for etcd (``go install`` refuses etcd's replace directives)."""
    _check_version(version)
    return _wrapper_gomod("etcdbuild", f"go.etcd.io/etcd/server/v3 {version}", [ETCD_PKG])


def render_helm_gomod(version: str = HELM_VERSION) -> str:
    """Wrapper module for helm (equivalent to ``go install helm.sh/helm/v3/cmd/helm@version``)."""
    _check_version(version)
    return _wrapper_gomod("helmbuild", f"helm.sh/helm/v3 {version}", [HELM_PKG])


def render_kube_router_gomod(version: str = KUBE_ROUTER_VERSION,
                             bumps: Sequence[tuple[str, str]] = KUBE_ROUTER_DEPENDENCY_BUMPS) -> str:
    """Wrapper module for kube-router, with its vulnerable dependencies raised."""
    _check_version(version)
    extra = ["// Raised past published advisories; kube-router builds with them.",
             *[f"require {mod} {ver}" for mod, ver in bumps], ""] if bumps else []
    return _wrapper_gomod("kuberouterbuild", f"github.com/cloudnativelabs/kube-router/v2 {version}",
                          [KUBE_ROUTER_PKG], extra)


def render_pause_gomod() -> str:
    return "module lightbox.local/pausebuild\n\ngo 1.24.0\n"


def _tool_block(tools: Sequence[str]) -> list[str]:
    if len(tools) == 1:
        return [f"tool {tools[0]}"]
    return ["tool (", *[f"\t{t}" for t in tools], ")"]


def k8s_ldflags(version: str = K8S_VERSION) -> str:
    """-ldflags that make ``/version`` and ``--version`` report the release."""
    major, minor, _ = _check_version(version)
    return " ".join([
        "-s -w",
        f"-X k8s.io/component-base/version.gitVersion={version}",
        f"-X k8s.io/component-base/version.gitMajor={major}",
        f"-X k8s.io/component-base/version.gitMinor={minor}",
        f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
    ])


def helm_ldflags(version: str = HELM_VERSION) -> str:
    return f"-s -w -X helm.sh/helm/v3/internal/version.version={version}"


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """One wrapper module and the commands built from it into ``bin/<key>/``."""

    key: str                       # e.g. "k8s-v1.34.4": names build/<key>/ and bin/<key>/
    label: str                     # for messages, e.g. "kube-apiserver v1.34.4"
    gomod: str
    outputs: tuple[tuple[str, str], ...]   # (package, binary name)
    ldflags: str = "-s -w"
    #: Extra environment for ``go build`` (e.g. CGO_ENABLED=0 for static binaries).
    env: tuple[tuple[str, str], ...] = ()
    #: Source files written next to go.mod (a module with its own main package).
    files: tuple[tuple[str, str], ...] = ()

    def go_build_args(self, out_dir: Path) -> list[str]:
        args = ["build", "-trimpath", "-ldflags", self.ldflags]
        if len(self.outputs) == 1:
            (pkg, name), = self.outputs
            return [*args, "-o", str(out_dir / name), pkg]
        for pkg, name in self.outputs:
            if _default_binary_name(pkg) != name:
                raise ValueError(f"{pkg} would be built as {_default_binary_name(pkg)}, not {name}")
        return [*args, "-o", f"{out_dir}{os.sep}", *(pkg for pkg, _ in self.outputs)]


def _default_binary_name(pkg: str) -> str:
    parts = pkg.split("/")
    if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
        return parts[-2]
    return parts[-1]


def k8s_spec(
    version: str = K8S_VERSION, binaries: Sequence[str] = ("kube-apiserver", "kube-controller-manager")
) -> BuildSpec:
    unknown = [b for b in binaries if f"k8s.io/kubernetes/cmd/{b}" not in K8S_TOOLS]
    if unknown:
        raise ValueError(f"not a command of the k8s wrapper module: {', '.join(unknown)}; "
                         f"allowed: {', '.join(p.rsplit('/', 1)[1] for p in K8S_TOOLS)}")
    pkgs = tuple((f"k8s.io/kubernetes/cmd/{b}", b) for b in binaries)
    return BuildSpec(
        key=f"k8s-{version}",
        label=f"{' and '.join(binaries)} {version}",
        # The go.mod is always the full one (every tool), so building only
        # kube-controller-manager or the node's commands later reuses the same
        # module, go.sum and cache.
        gomod=render_k8s_gomod(version),
        outputs=pkgs,
        ldflags=k8s_ldflags(version),
    )


def etcd_spec(version: str = ETCD_VERSION) -> BuildSpec:
    return BuildSpec(key=f"etcd-{version}", label=f"etcd {version}", gomod=render_etcd_gomod(version),
                     outputs=((ETCD_PKG, "etcd"),))


def helm_spec(version: str = HELM_VERSION) -> BuildSpec:
    return BuildSpec(key=f"helm-{version}", label=f"helm {version}", gomod=render_helm_gomod(version),
                     outputs=((HELM_PKG, "helm"),), ldflags=helm_ldflags(version))


def kube_router_spec(version: str = KUBE_ROUTER_VERSION) -> BuildSpec:
    return BuildSpec(key=f"kube-router-{version}", label=f"kube-router {version}",
                     gomod=render_kube_router_gomod(version), outputs=((KUBE_ROUTER_PKG, "kube-router"),),
                     env=(("CGO_ENABLED", "0"),))


def pause_spec() -> BuildSpec:
    return BuildSpec(key=f"pause-{PAUSE_VERSION}", label=f"pause {PAUSE_VERSION}", gomod=render_pause_gomod(),
                     outputs=((PAUSE_PKG, "pause"),), env=(("CGO_ENABLED", "0"),),
                     files=(("main.go", PAUSE_MAIN_GO),))


# --------------------------------------------------------------------------- lookup


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/lightbox`` (``$LIGHTBOX_CACHE_DIR`` overrides)."""
    explicit = os.environ.get("LIGHTBOX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lightbox"


@dataclasses.dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    etcd: Path
    #: Where they came from: "KUBEBUILDER_ASSETS", "cache" or "built".
    source: str = "cache"

    def as_dict(self) -> dict[str, str]:
        return {"kube-apiserver": str(self.kube_apiserver),
                "kube-controller-manager": str(self.kube_controller_manager),
                "etcd": str(self.etcd)}


def _is_executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def binary_version(path: Path, timeout: float = 20.0) -> str | None:
    """``kube-apiserver --version`` -> "v1.34.4" (None when it cannot be told)."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\bv?(\d+\.\d+\.\d+)\b", out.stdout + out.stderr)
    return f"v{m[1]}" if m else None


def ensure_binaries(
    *,
    k8s_version: str = K8S_VERSION,
    etcd_version: str = ETCD_VERSION,
    cache: Path | None = None,
    log: Log | None = None,
) -> Binaries:
    """Paths to kube-apiserver, kube-controller-manager and etcd; builds what is missing.

    Honours ``$KUBEBUILDER_ASSETS``. Raises :class:`BinaryError` with the reason
    and the remedy when a binary can be neither found nor built.
    """
    log = log or _default_log
    cache = cache or cache_root()

    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        adir = Path(assets).expanduser()
        apiserver, etcd = adir / "kube-apiserver", adir / "etcd"
        missing = [p.name for p in (apiserver, etcd) if not _is_executable(p)]
        if missing:
            raise BinaryError(
                f"KUBEBUILDER_ASSETS={assets} lacks executable {' and '.join(missing)}. Point it at an envtest "
                "asset directory (e.g. `setup-envtest use 1.34.x -p path`) or unset it to build the binaries "
                "from the Go module proxy."
            )
        kcm = adir / "kube-controller-manager"
        if not _is_executable(kcm):
            version = binary_version(apiserver) or k8s_version
            log(f"KUBEBUILDER_ASSETS has no kube-controller-manager; using one for {version} from {cache}")
            kcm = ensure_built(k8s_spec(version, ("kube-controller-manager",)), cache=cache, log=log)[
                "kube-controller-manager"]
        return Binaries(apiserver, kcm, etcd, source="KUBEBUILDER_ASSETS")

    k8s = ensure_built(k8s_spec(k8s_version), cache=cache, log=log)
    etcd_build = ensure_built(etcd_spec(etcd_version), cache=cache, log=log)
    return Binaries(k8s["kube-apiserver"], k8s["kube-controller-manager"], etcd_build["etcd"],
                    source="built" if (k8s.built or etcd_build.built) else "cache")


def ensure_helm(*, version: str = HELM_VERSION, cache: Path | None = None, log: Log | None = None) -> Path:
    """Path to helm (``$LIGHTBOX_HELM`` or the cache; built from the module proxy when missing)."""
    explicit = os.environ.get("LIGHTBOX_HELM")
    if explicit:
        p = Path(explicit).expanduser()
        if not _is_executable(p):
            raise BinaryError(f"LIGHTBOX_HELM={explicit} is not an executable file")
        return p
    return ensure_built(helm_spec(version), cache=cache or cache_root(), log=log or _default_log)["helm"]


@dataclasses.dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    kube_router: Path
    pause: Path

    def as_dict(self) -> dict[str, str]:
        return {k.replace("_", "-"): str(v) for k, v in dataclasses.asdict(self).items()}


def ensure_node_binaries(*, k8s_version: str = K8S_VERSION, cache: Path | None = None,
                         log: Log | None = None) -> NodeBinaries:
    """kubelet, kube-scheduler, kube-proxy, kube-router and pause; builds what is missing.

    With ``$KUBEBUILDER_ASSETS`` the node's commands are built for the apiserver's version there.
    """
    log = log or _default_log
    cache = cache or cache_root()
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        k8s_version = binary_version(Path(assets).expanduser() / "kube-apiserver") or k8s_version
    k8s = ensure_built(k8s_spec(k8s_version, NODE_K8S_BINARIES), cache=cache, log=log)
    router = ensure_built(kube_router_spec(), cache=cache, log=log)
    pause = ensure_built(pause_spec(), cache=cache, log=log)
    return NodeBinaries(k8s["kubelet"], k8s["kube-scheduler"], k8s["kube-proxy"], router["kube-router"],
                        pause["pause"])


class _Built(dict[str, Path]):
    built: bool = False


def ensure_built(spec: BuildSpec, *, cache: Path, log: Log) -> _Built:
    """The spec's binaries from ``cache/bin/<key>/``, building them first when missing."""
    bin_dir = cache / "bin" / spec.key
    wanted = {name: bin_dir / name for _, name in spec.outputs}

    def lookup() -> _Built | None:
        if all(_is_executable(p) for p in wanted.values()):
            return _Built(wanted)
        return None

    if (hit := lookup()) is not None:
        return hit
    with _build_lock(cache, spec.key, log):
        if (hit := lookup()) is not None:   # another process built it while we waited
            return hit
        missing = [name for name, p in wanted.items() if not _is_executable(p)]
        sub = dataclasses.replace(spec, outputs=tuple(o for o in spec.outputs if o[1] in missing))
        _build(sub, cache=cache, log=log)
    result = lookup()
    if result is None:  # pragma: no cover - _build raises first
        raise BinaryError(f"build of {spec.label} finished but {bin_dir} is incomplete")
    result.built = True
    return result


@contextlib.contextmanager
def _build_lock(cache: Path, key: str, log: Log) -> Iterator[None]:
    lock_dir = cache / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock_path = lock_dir / f"{key}.lock"
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building {key} (lock {lock_path}); waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- building

#: Where to look for ``go`` when it is not on PATH (the official tarball's location).
GO_FALLBACKS: tuple[str, ...] = ("/usr/local/go/bin/go", "~/go/bin/go", "~/sdk/go/bin/go")


def find_go() -> Path:
    candidates = [os.environ.get("LIGHTBOX_GO"), shutil.which("go"),
                  *(os.path.expanduser(p) for p in GO_FALLBACKS)]
    for c in candidates:
        if c and _is_executable(Path(c)):
            return Path(c)
    raise BinaryError(
        "the Go toolchain is needed to build kube-apiserver, kube-controller-manager and etcd, but `go` is not "
        f"on PATH (nor at {', '.join(GO_FALLBACKS)}). Install Go >= {MIN_GO[0]}.{MIN_GO[1]} "
        "(https://go.dev/dl/, or your distribution's golang package) and retry, or set KUBEBUILDER_ASSETS to a "
        "directory holding kube-apiserver, etcd and kube-controller-manager."
    )


def _go_version(go: Path, env: dict[str, str]) -> tuple[int, int] | None:
    try:
        out = subprocess.run([str(go), "env", "GOVERSION"], capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"go(\d+)\.(\d+)", out.stdout)
    return (int(m[1]), int(m[2])) if m else None


def go_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GOMODCACHE"] = str(cache / "go" / "mod")
    env["GOCACHE"] = str(cache / "go" / "build")
    env.setdefault("GOFLAGS", "-buildvcs=false")
    # A go.work above the cache dir must not capture the wrapper modules.
    env["GOWORK"] = "off"
    return env


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _build(spec: BuildSpec, *, cache: Path, log: Log) -> None:
    go = find_go()
    env = go_env(cache)
    version = _go_version(go, env)
    if version is not None and version < MIN_GO:
        raise BinaryError(
            f"{go} is Go {version[0]}.{version[1]}; building {spec.label} needs Go >= {MIN_GO[0]}.{MIN_GO[1]}. "
            "Install a newer Go (https://go.dev/dl/) or set KUBEBUILDER_ASSETS."
        )
    build_dir = cache / "build" / spec.key
    bin_dir = cache / "bin" / spec.key
    build_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    (cache / "go").mkdir(parents=True, exist_ok=True)

    for fname, content in spec.files:
        (build_dir / fname).write_text(content)
    env.update(dict(spec.env))
    gomod = build_dir / "go.mod"
    # Keep a tidied go.mod (and its go.sum) when it came from the same template:
    # `go mod tidy` then has nothing to resolve. Otherwise start from the template.
    seed = build_dir / "go.mod.seed"
    if not gomod.exists() or not seed.exists() or seed.read_text() != spec.gomod:
        gomod.write_text(spec.gomod)
        seed.write_text(spec.gomod)

    names = ", ".join(name for _, name in spec.outputs)
    log(f"building {names} ({spec.label}) from the Go module proxy with {go} "
        f"(cold build takes several minutes; log: {build_dir / 'build.log'})")
    started = time.monotonic()
    _run_logged([str(go), "mod", "tidy"], cwd=build_dir, env=env, logfile=build_dir / "tidy.log",
                what=f"`go mod tidy` for {spec.label}", log=log,
                hint="Needs network access to the Go module proxy ($GOPROXY, default proxy.golang.org)")

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.key}-", dir=bin_dir.parent))
    try:
        _run_logged([str(go), *spec.go_build_args(tmp)], cwd=build_dir, env=env, logfile=build_dir / "build.log",
                    what=f"`go build` of {spec.label}", log=log,
                    hint="A newer Kubernetes release may need a newer Go than the installed one")
        for _, name in spec.outputs:
            built = tmp / name
            if not _is_executable(built):
                raise BinaryError(f"`go build` of {spec.label} succeeded but produced no {name} in {tmp}")
            os.replace(built, bin_dir / name)   # atomic: same filesystem
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"built {names} ({spec.label}) into {bin_dir} in {time.monotonic() - started:.0f}s")


#: Seconds between "still building" lines, so a cold build never looks hung.
PROGRESS_EVERY = 60.0


def _run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], logfile: Path, what: str, hint: str,
                log: Log | None = None, progress_every: float = PROGRESS_EVERY) -> None:
    started = time.monotonic()
    with open(logfile, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}    # {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise BinaryError(f"{what} could not run: {exc}") from exc
        while True:
            try:
                rc = proc.wait(timeout=progress_every)
                break
            except subprocess.TimeoutExpired:
                if log is not None:
                    log(f"still running {what}: {time.monotonic() - started:.0f}s elapsed (log: {logfile})")
    if rc != 0:
        raise BinaryError(
            f"{what} failed (exit {rc}) in {cwd}. {hint}. Last lines of {logfile}:\n{_tail(logfile)}\n"
            "Alternatively set KUBEBUILDER_ASSETS to a directory with prebuilt binaries."
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m lightbox.devtools.binaries [--helm] [--node]``: build/locate and print the paths."""
    import argparse

    parser = argparse.ArgumentParser(prog="lightbox-binaries")
    parser.add_argument("--helm", action="store_true", help="also ensure helm")
    parser.add_argument("--node", action="store_true",
                        help="also ensure the real node's kubelet, kube-scheduler, kube-proxy, kube-router, pause")
    args = parser.parse_args(argv)
    try:
        b = ensure_binaries()
        for name, path in b.as_dict().items():
            print(f"{name}\t{path}")
        if args.helm:
            print(f"helm\t{ensure_helm()}")
        if args.node:
            for name, path in ensure_node_binaries().as_dict().items():
                print(f"{name}\t{path}")
    except BinaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``lightbox vendor check --image REF``: the vendor's real image, run as a sandbox pod runs it.

The command mode (``vendor check -- COMMAND``) runs a process in namespaces; this mode runs the
image itself with a container runtime, with what the run pod gives the vendor container:

* the root file system read-only, user 65532, no capabilities, no new privileges, seccomp;
* no network: a network namespace of its own with no interface up, so every DNS lookup and
  connection fails at once (and is counted, as in command mode, from the namespace's
  ``OutNoRoutes`` counters);
* the sample input read-only at /input, an output tmpfs of the output limit at /output, no
  other mounts; the contract's environment (paths rewritten to /input and /output);
* the memory limit as a cgroup limit (the kernel kills, as it does a pod at its limit), and the
  time limit (the container is killed).

Runtimes, the first available unless ``--runtime`` names one: podman, docker (when its daemon
answers), containerd's ``ctr`` (root; a private containerd with its own root, state and socket is
started for the check when no ``--containerd-address`` is given). The verdict comes from the same
checks as the command mode (``vendorcheck.run_check``).

Images whose config sets ``NVIDIA_VISIBLE_DEVICES`` or ``NVIDIA_DRIVER_CAPABILITIES`` are refused:
on a GPU node the NVIDIA runtime acts on these variables, so an image could give itself devices
the Algorithm never requested.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightbox.api.run import INPUT_DIR_ENV, OUTPUT_DIR_ENV
from lightbox.sandbox.isolation import IsolationResult, IsolationUnavailable

CONTAINER_INPUT, CONTAINER_OUTPUT = "/input", "/output"
SANDBOX_USER = "65532"
REFUSED_IMAGE_ENV = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES")
CTR_NAMESPACE = "lightbox-vendor-check"
OCI_ARCHIVE = "oci-archive:"
# ctr's default capability set (containerd 1.6 oci.defaultUnixCaps): all dropped, as the pod's drop: [ALL].
CTR_DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
RUNTIMES = ("podman", "docker", "ctr")
LOG_LIMIT = 1 << 20


class ImageRefused(ValueError):
    """The image itself breaks a rule that holds before any run (its config's environment)."""


# --- pure pieces ---------------------------------------------------------------------------


def container_env(env: Mapping[str, str], host_in: Path, host_out: Path) -> dict[str, str]:
    """The contract's variables with the host's sample folders replaced by /input and /output.

    Only what ``vendor_environment`` sets goes in: the host's PATH or LANG belong to the image.
    """
    host_in_s, host_out_s = str(host_in), str(host_out)
    out: dict[str, str] = {}
    for key, value in env.items():
        # HOLOSCAN_/MONAI_: a MONAI Application Package's folders (sandbox/packaging.py)
        if not (key.startswith(("LIGHTBOX_", "HOLOSCAN_", "MONAI_")) or key in ("HOME", "TMPDIR")):
            continue
        out[key] = CONTAINER_INPUT if value == host_in_s else CONTAINER_OUTPUT if value == host_out_s else value
    return out


def refused_env(image_env: Sequence[str]) -> list[str]:
    """The image config's ``KEY=VALUE`` entries that Lightbox refuses."""
    return [item for item in image_env if item.partition("=")[0] in REFUSED_IMAGE_ENV]


def no_route_count(snmp: str, snmp6: str = "") -> int:
    """``Ip: OutNoRoutes`` plus ``Ip6OutNoRoutes`` of a network namespace's /proc/net/snmp{,6}."""
    total = 0
    lines = snmp.splitlines()
    # Each line against the next (the header row, then its values), read as far as the kernel's table goes.
    for head, values in zip(lines, lines[1:], strict=False):
        if head.startswith("Ip:") and values.startswith("Ip:") and "OutNoRoutes" in head:
            total += int(dict(zip(head.split()[1:], values.split()[1:], strict=False)).get("OutNoRoutes", 0))
            break
    for line in snmp6.splitlines():
        key, _, value = line.partition(" ")
        if key == "Ip6OutNoRoutes":
            total += int(value.strip() or 0)
    return total


@dataclass(frozen=True)
class ContainerSpec:
    """What to run, whatever the runtime."""

    image: str
    args: tuple[str, ...]  # replaces the image's CMD (the entrypoint stays)
    env: Mapping[str, str]
    input_dir: Path
    output_dir: Path
    memory_bytes: int | None
    name: str
    max_processes: int | None = None
    tmp_dir: Path | None = None  # bound at /tmp: as command mode's private /tmp, what is left there is reported
    netns: Path | None = None  # a network namespace made for the check (ctr, podman)
    cgroup: str | None = None  # ctr: cgroup path, for the peak memory


def ctr_argv(base: Sequence[str], spec: ContainerSpec) -> list[str]:
    # No --user in ctr 1.6: the image imported for the check has the pod's user in its config (derive_archive).
    argv = [*base, "run", "--rm", "--read-only", "--seccomp", "--cwd", CONTAINER_OUTPUT]
    for cap in CTR_DEFAULT_CAPS:
        argv += ["--cap-drop", cap]
    argv += ["--mount", f"type=bind,src={spec.input_dir},dst={CONTAINER_INPUT},options=rbind:ro",
             "--mount", f"type=bind,src={spec.output_dir},dst={CONTAINER_OUTPUT},options=rbind:rw"]
    if spec.tmp_dir is not None:
        argv += ["--mount", f"type=bind,src={spec.tmp_dir},dst=/tmp,options=rbind:rw"]
    # ctr's default spec has a writable tmpfs at /run, which a pod's container does not: cover it read-only
    argv += ["--mount", "type=tmpfs,src=tmpfs,dst=/run,options=ro:nosuid:nodev:noexec"]
    if spec.netns is not None:
        argv += ["--with-ns", f"network:{spec.netns}"]
    if spec.memory_bytes is not None:
        argv += ["--memory-limit", str(spec.memory_bytes)]
    if spec.cgroup is not None:
        argv += ["--cgroup", spec.cgroup]
    for key, value in sorted(spec.env.items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, spec.image, spec.name, *spec.args]


def podman_docker_argv(runtime: str, spec: ContainerSpec) -> list[str]:
    """podman and docker share these flags; podman joins our namespace, docker gets ``none``."""
    network = f"ns:{spec.netns}" if runtime == "podman" and spec.netns is not None else "none"
    argv = [runtime, "run", "--rm", "--name", spec.name, "--read-only", "--user", f"{SANDBOX_USER}:{SANDBOX_USER}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", network,
            "--mount", f"type=bind,src={spec.input_dir},dst={CONTAINER_INPUT},readonly",
            "--mount", f"type=bind,src={spec.output_dir},dst={CONTAINER_OUTPUT}",
            "--workdir", CONTAINER_OUTPUT, "--pull", "never"]
    if spec.tmp_dir is not None:
        argv += ["--mount", f"type=bind,src={spec.tmp_dir},dst=/tmp"]
    if runtime == "podman":  # podman's --read-only adds writable tmpfs at /run, /tmp and /var/tmp unless told not to
        argv.append("--read-only-tmpfs=false")
    if spec.memory_bytes is not None:
        argv += ["--memory", str(spec.memory_bytes), "--memory-swap", str(spec.memory_bytes)]
    if spec.max_processes is not None:
        argv += ["--pids-limit", str(spec.max_processes)]
    for key, value in sorted(spec.env.items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, spec.image, *spec.args]


def exit_to_returncode(code: int) -> int:
    """Runtimes report a container killed by signal N as 128+N; the verdict code wants -N."""
    return -(code - 128) if 128 < code < 160 else code


def _read_archive(tar: tarfile.TarFile, path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, manifest, config) of the one linux/amd64 image in an OCI archive."""
    def blob(digest: str) -> Any:
        try:
            member = tar.extractfile(f"blobs/sha256/{digest.partition(':')[2]}")
        except KeyError:
            member = None
        if member is None:
            raise ImageRefused(f"{path}: blob {digest} is missing")
        return json.loads(member.read())

    try:
        index_file = tar.extractfile("index.json")
    except KeyError:
        index_file = None
    if index_file is None:
        raise ImageRefused(f"{path} is not an OCI archive (no index.json)")
    manifests = json.loads(index_file.read()).get("manifests") or []
    if len(manifests) != 1:
        raise ImageRefused(f"{path} holds {len(manifests)} images; give an archive of one")
    annotations = manifests[0].get("annotations") or {}
    name = annotations.get("io.containerd.image.name")
    if not name and annotations.get("org.opencontainers.image.ref.name"):
        name = f"localhost/vendor-check:{annotations['org.opencontainers.image.ref.name']}"
    if not name:
        raise ImageRefused(f"{path}: the index names no image (annotation org.opencontainers.image.ref.name)")
    doc = blob(manifests[0]["digest"])
    if "manifests" in doc:  # an index: the linux/amd64 manifest
        chosen = [m for m in doc["manifests"] if (m.get("platform") or {}).get("architecture") in ("amd64", None)]
        if not chosen:
            raise ImageRefused(f"{path}: no linux/amd64 image in the index")
        doc = blob(chosen[0]["digest"])
    return name, doc, blob(doc["config"]["digest"])


def archive_image(path: Path) -> tuple[str, list[str]]:
    """(name, config Env) of the image in an OCI archive, read without importing it."""
    with tarfile.open(path) as tar:
        name, _, config = _read_archive(tar, path)
    return name, list((config.get("config") or {}).get("Env") or [])


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def derive_archive(src: Path, dst: Path, user: str) -> str:
    """``src`` with the config's User set to ``user``, as an archive ``ctr images import`` names; returns the name.

    ctr 1.6 cannot override the user at run time, while the run pod does (runAsUser/runAsGroup):
    the same layers with the pod's user in the config run as the pod runs them.
    """
    with tarfile.open(src) as tar:
        name, manifest, config = _read_archive(tar, src)
        config = {**config, "config": {**(config.get("config") or {}), "User": user}}
        config_bytes = _canonical(config)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = {**manifest, "config": {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}}
        manifest_bytes = _canonical(manifest)
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                    "annotations": {"io.containerd.image.name": name},
                }
            ],
        }
        with tarfile.open(dst, "w") as out:
            def add(member_name: str, data: bytes) -> None:
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))

            add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add("index.json", _canonical(index))
            add(f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
            add(f"blobs/sha256/{config_digest[7:]}", config_bytes)
            for layer in manifest["layers"]:
                member = tar.getmember(f"blobs/sha256/{layer['digest'].partition(':')[2]}")
                out.addfile(member, tar.extractfile(member))
    return name


# --- side effects: runtimes --------------------------------------------------------------


def _capped_reader(stream: Any, sink: bytearray, truncated: list[bool]) -> threading.Thread:
    def pump() -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            room = LOG_LIMIT - len(sink)
            if room > 0:
                sink.extend(chunk[:room])
            if len(chunk) > max(room, 0):
                truncated[0] = True

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _available(runtime: str) -> bool:
    if shutil.which(runtime) is None:
        return False
    if runtime == "docker":  # the client alone is no runtime: its daemon must answer
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    if runtime == "ctr":
        return os.geteuid() == 0 and shutil.which("containerd") is not None and shutil.which("ip") is not None
    return True


def choose_runtime(wanted: str = "auto", available: Callable[[str], bool] | None = None) -> str:
    available = available or _available
    if wanted != "auto":
        if wanted not in RUNTIMES:
            raise IsolationUnavailable(f"--runtime {wanted!r}: one of auto, {', '.join(RUNTIMES)}")
        if not available(wanted):
            raise IsolationUnavailable(
                f"{wanted} is not available here" + (" (ctr needs root, containerd and ip)" if wanted == "ctr" else "")
            )
        return wanted
    for runtime in RUNTIMES:
        if available(runtime):
            return runtime
    raise IsolationUnavailable(
        "no container runtime: install podman, or run as root with containerd (ctr), or start docker"
    )


def _cache_root() -> Path:
    explicit = os.environ.get("LIGHTBOX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightbox"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the checker dies, so a killed check leaves no containerd behind."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def _containerd(root: Path, wait: float) -> Iterator[Path]:
    state = Path(tempfile.mkdtemp(prefix="lightbox-containerd-"))
    socket = state / "containerd.sock"
    config = state / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{root}"\nstate = "{state / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
    )
    log = (state / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + wait
        while subprocess.run(["ctr", "--address", str(socket), "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise IsolationUnavailable(
                    f"containerd did not start: {(state / 'containerd.log').read_text(errors='replace')[-600:]}"
                )
            time.sleep(0.1)
        yield socket
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(state / "state")], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def private_containerd(root: Path | None = None) -> Iterator[Path]:
    """A containerd of our own: the CRI plugin disabled (no CNI, no pod sandbox image); state and socket temporary.

    Its root is kept under the cache, so an image imported once is unpacked once. Two daemons must not
    share a root: when another check holds it (a lock file), or a daemon left by a killed check still
    does (containerd then waits for the root's database), this check uses a root of its own, removed after.
    """
    import fcntl

    cached = root or _cache_root() / "vendor-check" / "containerd-root"
    cached.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context((cached.parent / f"{cached.name}.lock").open("w"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            stack.callback(fcntl.flock, lock, fcntl.LOCK_UN)
            try:
                socket = stack.enter_context(_containerd(cached, wait=20))
            except IsolationUnavailable:
                pass
            else:
                yield socket
                return
        own = Path(tempfile.mkdtemp(prefix="containerd-root-", dir=cached.parent))
        stack.callback(shutil.rmtree, own, True)
        stack.callback(subprocess.run, ["umount", "-R", str(own)], capture_output=True)
        yield stack.enter_context(_containerd(own, wait=30))


@contextlib.contextmanager
def network_namespace(name: str) -> Iterator[Path]:
    """A named network namespace with no interface up: its counters outlive the container."""
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        raise IsolationUnavailable(f"cannot create a network namespace: {done.stderr.strip()}")
    try:
        yield Path("/var/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def netns_no_routes(name: str) -> int:
    def read(path: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", name, "cat", path], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    return no_route_count(read("/proc/net/snmp"), read("/proc/net/snmp6"))


@contextlib.contextmanager
def host_tmpfs(size: int, files: int, *, uid: str = SANDBOX_USER, mode: str = "0755") -> Iterator[Path]:
    """A tmpfs of ``size`` bytes and ``files`` entries on the host, bound into the container: the kernel enforces
    the limits, and what is left there can be inspected after the container is gone."""
    where = Path(tempfile.mkdtemp(prefix="lightbox-check-"))
    # +1: the file system's root directory takes an inode of its own
    options = f"size={size},nr_inodes={files + 1},mode={mode},uid={uid},gid={uid}"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "lightbox-check", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        shutil.rmtree(where, ignore_errors=True)
        raise IsolationUnavailable(f"cannot mount a tmpfs for the check: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def tree_usage(root: Path) -> tuple[int, int]:
    """(entries, bytes of regular files) under ``root``, links not followed."""
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                size += st.st_size if not os.path.islink(os.path.join(dirpath, name)) else 0
    return entries, size


def _copy_out(src: Path, dst: Path) -> None:
    """What the container left, for the checks (symlinks stay links: the checks refuse them)."""
    for item in src.iterdir():
        target = dst / item.name
        if item.is_symlink():
            os.symlink(os.readlink(item), target)
        elif item.is_dir():
            shutil.copytree(item, target, symlinks=True)
        else:
            shutil.copy2(item, target)


class _CgroupSampler(threading.Thread):
    """Samples the container's cgroup v1 memory high-water mark and task count while it runs (runc removes
    the cgroup when the container is deleted, so the values are read while it lives)."""

    def __init__(self, cgroup: str) -> None:
        super().__init__(daemon=True)
        rel = cgroup.lstrip("/")
        self.memory = Path("/sys/fs/cgroup/memory") / rel / "memory.max_usage_in_bytes"
        self.pids = Path("/sys/fs/cgroup/pids") / rel
        self.peak = self.peak_tasks = self.pids_refused = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.peak = max(self.peak, int(self.memory.read_text()))
        for name in ("pids.current", "pids.peak"):  # pids.peak: the exact high-water mark, on newer kernels
            with contextlib.suppress(OSError, ValueError):
                self.peak_tasks = max(self.peak_tasks, int((self.pids / name).read_text()))
        with contextlib.suppress(OSError, ValueError):
            events = dict(line.split() for line in (self.pids / "pids.events").read_text().splitlines())
            self.pids_refused = max(self.pids_refused, int(events.get("max", 0)))

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.sample()


def remove_cgroup(cgroup: str) -> None:
    """runc removes the container's cgroup but not the parent it created: leave the host as found (rmdir only
    removes empty groups, so a concurrent check's group stays)."""
    rel = Path(cgroup.lstrip("/"))
    for controller in Path("/sys/fs/cgroup").iterdir():
        for path in (controller / rel, controller / rel.parent):
            with contextlib.suppress(OSError):
                path.rmdir()


def precreate_pids_cgroup(cgroup: str, max_processes: int) -> None:
    """ctr has no pids flag; runc joins an existing cgroup and leaves limits its spec does not set."""
    where = Path("/sys/fs/cgroup/pids") / cgroup.lstrip("/")
    if where.parent.parent.is_dir():
        where.mkdir(parents=True, exist_ok=True)
        (where / "pids.max").write_text(str(max_processes))


@dataclass
class ImageRunner:
    """Callable like ``isolation.run_isolated``; vendorcheck.run_check calls it in command mode's place."""

    runtime: str
    image: str
    ctr_base: tuple[str, ...] = ()
    # ctr replaces the whole process (entrypoint too) with the arguments it is given
    entrypoint: tuple[str, ...] = ()
    tasks: tuple[int, int] = (0, 0)  # (peak tasks, forks refused at the limit) of the last run

    def __call__(
        self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float, max_memory_bytes: int | None = None,
        max_file_bytes: int | None = None, view: Any = None, **_unused: Any,
    ) -> IsolationResult:
        """Command mode's other arguments (hidden paths, working directory, extra read-only binds)
        have no counterpart: the container sees its image, /input and /output only."""
        name = f"lightbox-check-{secrets.token_hex(4)}"
        if view is not None:
            host_in = next(Path(host) for host, target in view.binds if target == CONTAINER_INPUT)
            host_out, limit = Path(view.output_host), int(view.max_output_bytes)
        else:
            host_in, host_out, limit = Path(env[INPUT_DIR_ENV]), Path(env[OUTPUT_DIR_ENV]), max_file_bytes or (64 << 20)
        with contextlib.ExitStack() as stack:
            netns = stack.enter_context(network_namespace(name)) if self.runtime in ("ctr", "podman") else None
            files = int(getattr(view, "max_output_files", 10000))
            max_processes = int(getattr(view, "max_processes", 512))
            out = stack.enter_context(host_tmpfs(limit, files))
            tmp = stack.enter_context(host_tmpfs(int(getattr(view, "max_tmp_bytes", limit)),
                                                 int(getattr(view, "max_tmp_files", files)), uid="0", mode="1777"))
            spec = ContainerSpec(
                image=self.image, args=(*self.entrypoint, *argv) if argv and self.runtime == "ctr" else tuple(argv),
                env=container_env(env, host_in, host_out), input_dir=host_in, output_dir=out, tmp_dir=tmp,
                memory_bytes=max_memory_bytes, name=name, netns=netns, max_processes=max_processes,
                cgroup=f"/{CTR_NAMESPACE}/{name}" if self.runtime == "ctr" else None,
            )
            if spec.cgroup is not None:
                precreate_pids_cgroup(spec.cgroup, max_processes)
                stack.callback(remove_cgroup, spec.cgroup)
            command = ctr_argv(self.ctr_base, spec) if self.runtime == "ctr" else podman_docker_argv(self.runtime, spec)
            peak, code, timed_out, seconds, stdout, stderr, truncated = self._run(command, spec, timeout)
            attempts = netns_no_routes(name) if netns is not None else 0
            output_files, output_bytes = tree_usage(out)
            outside_files, outside_bytes = tree_usage(tmp)
            space = os.statvfs(out)
            _copy_out(out, host_out)
        # 128+9 from the runtime: SIGKILL, which under a memory limit and before the deadline is the
        # kernel's OOM kill; with ctr the cgroup's high-water mark near the limit confirms it.
        near_limit = peak >= 0.9 * (max_memory_bytes or 0) if spec.cgroup else True
        memory_exceeded = bool(max_memory_bytes) and not timed_out and code == -9 and near_limit
        return IsolationResult(
            returncode=None if timed_out else code,
            timed_out=timed_out,
            seconds=seconds,
            stdout=stdout,
            stderr=stderr,
            output_truncated=truncated,
            network_attempts=attempts,
            memory_exceeded=memory_exceeded,
            peak_memory_bytes=peak,
            output_files=output_files,
            output_bytes=output_bytes,
            output_files_full=output_files >= files,
            output_space_full=space.f_bavail == 0,
            outside_files=outside_files,
            outside_bytes=outside_bytes,
            peak_tasks=self.tasks[0],
            process_limit_reached=self.tasks[1] > 0 or self.tasks[0] >= max_processes,
        )

    def _run(
        self, command: list[str], spec: ContainerSpec, timeout: float
    ) -> tuple[int, int, bool, float, bytes, bytes, bool]:
        stdout, stderr, truncated = bytearray(), bytearray(), [False]
        sampler = _CgroupSampler(spec.cgroup) if spec.cgroup else None
        t0 = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers = [_capped_reader(proc.stdout, stdout, truncated), _capped_reader(proc.stderr, stderr, truncated)]
        if sampler is not None:
            sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill(spec.name)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - t0
        for r in readers:
            r.join(timeout=10)
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
        self.tasks = (sampler.peak_tasks, sampler.pids_refused) if sampler else (0, 0)
        return (
            (sampler.peak if sampler else 0),
            exit_to_returncode(proc.returncode),
            timed_out,
            seconds,
            bytes(stdout),
            bytes(stderr),
            truncated[0],
        )

    def _kill(self, name: str) -> None:
        if self.runtime == "ctr":
            subprocess.run([*self.ctr_base, "task", "kill", "--signal", "SIGKILL", "--all", name], capture_output=True)
        else:
            subprocess.run([self.runtime, "kill", "--signal", "KILL", name], capture_output=True)


def _image_config(runtime: str, ctr_base: Sequence[str], ref: str) -> dict[str, Any]:
    """The image config's ``config`` object (Env, Entrypoint, Cmd, ...)."""
    if runtime == "ctr":
        return _ctr_image_config(ctr_base, ref)
    done = subprocess.run(
        [runtime, "image", "inspect", "--format", "{{json .Config}}", ref], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise IsolationUnavailable(f"{runtime} does not have the image {ref}: {done.stderr.strip()}")
    return dict(json.loads(done.stdout or "null") or {})


def _ctr_image_config(base: Sequence[str], ref: str) -> dict[str, Any]:
    listed = subprocess.run([*base, "images", "ls"], capture_output=True, text=True)
    for line in listed.stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == ref:
            digest = fields[2]
            break
    else:
        raise IsolationUnavailable(f"containerd has no image {ref}: import it (oci-archive:PATH) or pull it first")

    def content(d: str) -> Any:
        got = subprocess.run([*base, "content", "get", d], capture_output=True)
        if got.returncode != 0:
            raise IsolationUnavailable(f"containerd lacks content {d} of {ref}")
        return json.loads(got.stdout)

    doc = content(digest)
    if "manifests" in doc:
        chosen = [m for m in doc["manifests"] if (m.get("platform") or {}).get("architecture") in ("amd64", None)]
        if not chosen:
            raise ImageRefused(f"{ref}: no linux/amd64 image")
        doc = content(chosen[0]["digest"])
    return dict(content(doc["config"]["digest"]).get("config") or {})


@contextlib.contextmanager
def prepared_runner(ref: str, runtime: str = "auto", containerd_address: Path | None = None,
                    say: Callable[[str], None] = print) -> Iterator[ImageRunner]:
    """A runner for ``ref`` (a name the runtime has, or ``oci-archive:PATH``), after refusing a forbidden config env.

    Raises ImageRefused (the image breaks a rule) or IsolationUnavailable (no runtime to check it with).
    """
    archive = Path(ref[len(OCI_ARCHIVE):]) if ref.startswith(OCI_ARCHIVE) else None
    name = ref
    if archive is not None:  # refused before any runtime is needed
        if not archive.is_file():
            raise ImageRefused(f"{archive}: no such OCI archive")
        name, env = archive_image(archive)
        _refuse(ref, env)
    chosen = choose_runtime(runtime)
    with contextlib.ExitStack() as stack:
        base: tuple[str, ...] = ()
        if chosen == "ctr":
            socket = containerd_address or stack.enter_context(private_containerd())
            base = ("ctr", "--address", str(socket), "--namespace", CTR_NAMESPACE)
        if archive is not None and chosen == "ctr":
            derived = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lightbox-check-image-"))) / "image.tar"
            )
            derive_archive(archive, derived, f"{SANDBOX_USER}:{SANDBOX_USER}")
            archive = derived
        if archive is not None:
            say(f"  importing {archive} as {name} into {chosen}")
            if chosen == "ctr":
                import_archive(base, archive, name)
            else:
                load = [chosen, "load", "-i", str(archive)]
                done = subprocess.run(load, capture_output=True, text=True)
                if done.returncode != 0:
                    raise IsolationUnavailable(f"{' '.join(load)} failed: {done.stderr.strip()[-400:]}")
        config = _image_config(chosen, base, name)
        _refuse(ref, list(config.get("Env") or []))
        if chosen == "ctr" and archive is None and str(config.get("User") or "").partition(":")[0] != SANDBOX_USER:
            raise IsolationUnavailable(
                f"{name} runs as user {config.get('User') or 'root'!r} and ctr cannot run it as uid {SANDBOX_USER} as "
                "the "
                "pod does: give the image as oci-archive:PATH (it is then imported with the pod's user)"
            )
        say(f"  runtime: {chosen}; image {name}")
        yield ImageRunner(chosen, name, base, tuple(config.get("Entrypoint") or ()))


def archive_digest(path: Path) -> str:
    """The digest of the one image an OCI archive's index names: what containerd keeps it under."""
    with tarfile.open(path) as tar:
        try:
            member = tar.extractfile("index.json")
        except KeyError:
            member = None
        manifests = json.loads(member.read()).get("manifests") if member else None
    if not manifests or len(manifests) != 1:
        raise ImageRefused(f"{path}: the index must name one image")
    return str(manifests[0]["digest"])


def import_archive(base: Sequence[str], archive: Path, name: str) -> None:
    """``ctr images import`` of ``archive`` as ``name`` (REPO:TAG), then drop the earlier digests of REPO.

    An image is its digest: when containerd already has REPO@DIGEST (its root is kept between
    checks), only the tag is pointed at it again; reading and hashing the archive once more cost
    about 6 s for a 230 MiB image here, and unpacking nothing new. --digests keeps the image an
    earlier check imported under the same tag (as REPO@DIGEST): replacing it would let containerd's
    garbage collector take the layers both share while this import unpacks.
    """
    repo = name.rpartition(":")[0]
    pinned = f"{repo}@{archive_digest(archive)}"
    listed = subprocess.run([*base, "images", "ls", "-q"], capture_output=True, text=True).stdout.split()
    load = ([*base, "images", "tag", "--force", pinned, name] if pinned in listed
            else [*base, "images", "import", "--digests", "--base-name", repo, str(archive)])
    done = subprocess.run(load, capture_output=True, text=True)
    if done.returncode != 0:
        raise IsolationUnavailable(f"{' '.join(load[3:7])} failed: {done.stderr.strip()[-400:]}")
    _forget_older(base, name)


def _forget_older(base: Sequence[str], name: str) -> None:
    """Drop the digest names of earlier imports of ``name`` (unpacked now, the current one keeps what it shares)."""
    repo = name.rpartition(":")[0] if "@" not in name else name.partition("@")[0]
    listed = subprocess.run([*base, "images", "ls"], capture_output=True, text=True).stdout.splitlines()[1:]
    current = next((line.split()[2] for line in listed if line.split() and line.split()[0] == name), None)
    stale = [f[0] for f in (line.split() for line in listed) if f and f[0].startswith(f"{repo}@") and f[2] != current]
    if stale:
        subprocess.run([*base, "images", "rm", *stale], capture_output=True)


def _refuse(ref: str, env: Sequence[str]) -> None:
    bad = refused_env(env)
    if bad:
        raise ImageRefused(
            f"the image {ref} sets {', '.join(bad)} in its config. On a GPU node the NVIDIA container runtime acts on "
            f"these variables, so the image could give itself GPUs the Algorithm did not request: remove "
            f"{' and '.join(sorted({b.partition('=')[0] for b in bad}))} from the image (ENV) and declare GPUs in the "
            f"Algorithm's resources.gpus instead."
        )


def _map_manifest(ref: str) -> dict[str, Any]:
    """A MAP's app.json/pkg.json from the archive's layers, for the verdict (sandbox/packaging_map.py)."""
    from lightbox.sandbox.packaging_map import ManifestError, read_from_archive

    if not ref.startswith(OCI_ARCHIVE):
        return {
            "map_manifest_error": "not read: give the image as oci-archive:PATH to have /etc/holoscan/app.json checked"
        }
    try:
        return {"map_manifest": read_from_archive(Path(ref[len(OCI_ARCHIVE):]))}
    except (ManifestError, ImageRefused, OSError, tarfile.TarError) as exc:
        return {"map_manifest_error": str(exc)}


def check_image(
    ref: str,
    args: Sequence[str],
    settings: Any,
    *,
    runtime: str = "auto",
    containerd_address: Path | None = None,
    out: Any = None,
) -> int:
    """``vendor check --image``: the same checks and verdict as the command mode, the image run by a container
    runtime."""
    import dataclasses
    import sys

    from lightbox.sandbox import vendorcheck

    def say(text: str) -> None:
        print(text, file=out or sys.stdout)

    say(f"lightbox vendor check --image {ref}")
    if getattr(settings, "packaging", "lightbox") == "monai-map":
        settings = dataclasses.replace(settings, **_map_manifest(ref))
    try:
        with prepared_runner(ref, runtime, containerd_address, say) as runner:
            return vendorcheck.run_check(list(args), dataclasses.replace(settings, runner=runner), out)
    except ImageRefused as exc:
        say(f"  FAIL  {exc}")
        say("verdict: NOT CONFORMANT (1 problem)")
        return vendorcheck.EXIT_NOT_CONFORMANT
    except IsolationUnavailable as exc:
        say(f"  cannot check: {exc.reason}")
        say("  (the image was not run)")
        return vendorcheck.EXIT_CANNOT_CHECK

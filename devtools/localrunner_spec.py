"""Pure translation of a pod spec into local processes (development runner).

DEVELOPMENT ONLY. Pods are plain API dicts (camelCase, as ``kubectl get -o json``
shows them). Nothing here touches the API server, the filesystem or processes,
so every rule a kubelet would apply can be unit-tested on its own.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightbox.api.run import TERMINATION_LOG_ENV
from lightbox.devtools.localrunner_config import RunnerConfig

Pod = Mapping[str, Any]
Container = Mapping[str, Any]

# Every process of a pod carries this variable, so the runner can find and
# kill them when the pod is deleted (there are no cgroups to do it for us).
POD_MARKER_ENV = "LIGHTBOX_LOCALRUNNER_POD_UID"

# The kubelet keeps at most this much of a termination message file (its tail)
# and, for FallbackToLogsOnError, at most this much / these many lines of log.
MAX_TERMINATION_MESSAGE = 4096
MAX_FALLBACK_LOG_BYTES = 2048
MAX_FALLBACK_LOG_LINES = 80


class PodConfigError(Exception):
    """The pod cannot run here; ``reason`` names it like kubelet events do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ImagePullError(PodConfigError):
    def __init__(self, image: str) -> None:
        super().__init__(
            "ErrImagePull",
            f'Failed to pull image "{image}": the local runner has no entry point for this image '
            "(add its repository to the runner config's images)",
        )


class VolumeError(PodConfigError):
    def __init__(self, message: str) -> None:
        super().__init__("FailedMount", message)


class ContainerConfigError(PodConfigError):
    def __init__(self, message: str) -> None:
        super().__init__("CreateContainerConfigError", message)


class StartError(PodConfigError):
    def __init__(self, message: str) -> None:
        super().__init__("StartError", message)


# --- images and commands ------------------------------------------------------


def image_repository(image: str) -> str:
    """``host:5000/a/b:tag@sha256:..`` -> ``host:5000/a/b`` (a port is not a tag)."""
    name = image.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    return name


def image_entrypoint(image: str, images: Mapping[str, Sequence[str]]) -> list[str]:
    """The argv prefix standing in for the image; unknown images cannot be 'pulled'."""
    for key in (image, image_repository(image)):
        if key in images:
            return list(images[key])
    raise ImagePullError(image)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown names stay literal, ``$$`` is ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(substitute, text)


def container_argv(
    container: Container,
    env: Mapping[str, str],
    images: Mapping[str, Sequence[str]],
    commands: Mapping[str, Sequence[str]],
    mounts: Sequence[Mount] = (),
) -> list[str]:
    """command + args when command is set, else the image's entry point + args.

    The image is resolved first even when a command is given, because a kubelet
    pulls the image before it looks at the command. Arguments naming a path in
    a mount (``verifystep /data/studies``) get the host path, like env values.
    """
    entry = image_entrypoint(str(container.get("image", "")), images)

    def local(part: object) -> str:
        return expand_references(rewrite_path(str(part), mounts), env)

    command = [local(part) for part in container.get("command") or []]
    args = [local(part) for part in container.get("args") or []]
    if not command:
        return entry + args
    head = command[0]
    prefix = commands.get(head) or commands.get(posixpath.basename(head))
    return (list(prefix) if prefix else [head]) + command[1:] + args


def resolve_executable(
    argv: Sequence[str], path_env: str | None, which: Callable[..., str | None] = shutil.which
) -> list[str]:
    """Look the program up on the container's PATH, failing like a runtime does."""
    if not argv:
        raise StartError("no command specified")
    head = argv[0]
    found = which(head, path=path_env) if "/" not in head else head
    if found is None:
        raise StartError(f'exec: "{head}": executable file not found in $PATH')
    return [found, *argv[1:]]


# --- volumes and mounts ---------------------------------------------------------


@dataclass(frozen=True)
class HostVolume:
    name: str
    path: Path
    kind: Literal["claim", "emptyDir"]
    read_only: bool = False


@dataclass(frozen=True)
class Mount:
    mount_path: str
    host_path: Path
    read_only: bool


def claim_path(claims: Mapping[str, Path], namespace: str, claim: str) -> Path:
    path = claims.get(f"{namespace}/{claim}") or claims.get(claim)
    if path is None:
        raise VolumeError(
            f'persistentVolumeClaim "{claim}" is not mapped to a host directory (add it to the runner config\'s claims)'
        )
    return Path(path)


def map_volumes(pod: Pod, claims: Mapping[str, Path], empty_dir_root: Path) -> dict[str, HostVolume]:
    """Volume name -> host directory: claims from config, emptyDirs under the pod's dir."""
    namespace = str(pod.get("metadata", {}).get("namespace", "default"))
    volumes: dict[str, HostVolume] = {}
    for volume in pod.get("spec", {}).get("volumes") or []:
        name = str(volume["name"])
        if "persistentVolumeClaim" in volume:
            source = volume["persistentVolumeClaim"]
            path = claim_path(claims, namespace, str(source.get("claimName", "")))
            volumes[name] = HostVolume(name, path, "claim", bool(source.get("readOnly", False)))
        elif "emptyDir" in volume:
            volumes[name] = HostVolume(name, empty_dir_root / name, "emptyDir")
        else:
            kinds = sorted(key for key in volume if key != "name")
            raise VolumeError(
                f'volume "{name}" of type {", ".join(kinds) or "unknown"} is not supported by the local runner '
                "(only persistentVolumeClaim and emptyDir)"
            )
    return volumes


def sub_path(root: Path, sub: str) -> Path:
    """A subPath stays inside its volume, as the kubelet insists."""
    normal = posixpath.normpath(sub)
    if posixpath.isabs(sub) or normal == ".." or normal.startswith("../"):
        raise VolumeError(f'subPath "{sub}" must be a relative path inside the volume')
    return root if normal == "." else root / normal


def container_mounts(container: Container, volumes: Mapping[str, HostVolume]) -> list[Mount]:
    mounts: list[Mount] = []
    for item in container.get("volumeMounts") or []:
        name = str(item["name"])
        if name not in volumes:
            raise VolumeError(f'container "{container.get("name")}" mounts unknown volume "{name}"')
        if item.get("subPathExpr"):
            raise VolumeError("subPathExpr is not supported by the local runner")
        volume = volumes[name]
        host = sub_path(volume.path, str(item["subPath"])) if item.get("subPath") else volume.path
        read_only = bool(item.get("readOnly", False)) or volume.read_only
        mounts.append(Mount(posixpath.normpath(str(item["mountPath"])), host, read_only))
    return mounts


def pod_mount_paths(pod: Pod, volumes: Mapping[str, HostVolume]) -> list[Path]:
    """Host paths of every mount of every container (init or main) in the pod."""
    spec = pod.get("spec", {})
    paths: list[Path] = []
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        paths += [mount.host_path for mount in container_mounts(container, volumes)]
    return paths


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def hidden_paths(candidates: Iterable[Path], mounts: Sequence[Mount]) -> list[Path]:
    """Every candidate this container does not mount, so a vendor never sees the
    ground truth or the scorer's case table even through the host filesystem.

    A candidate that contains one of this container's mounts stays visible:
    hiding it would hide the mount too (the mount itself is what exposes it).
    So does one inside a mount (another container's subPath of the same volume,
    such as a per-case folder the scorer reads): through its mount the
    container sees it in a real pod too.
    """
    hidden: set[Path] = set()
    for candidate in candidates:
        if not any(
            _is_within(mount.host_path, candidate) or _is_within(candidate, mount.host_path) for mount in mounts
        ):
            hidden.add(candidate)
    return sorted(hidden)


# --- environment ------------------------------------------------------------------


def rewrite_path(value: str, mounts: Sequence[Mount]) -> str:
    """A value naming a path inside a mount names the matching host path instead,
    which is how ``LIGHTBOX_*_DIR`` reach host folders. The deepest mount wins."""
    best: Mount | None = None
    for mount in mounts:
        root = mount.mount_path
        if root == "/":
            continue
        if value == root or value.startswith(root + "/"):
            if best is None or len(root) > len(best.mount_path):
                best = mount
    if best is None:
        return value
    return str(best.host_path) + value[len(best.mount_path) :]


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_ref_value(path: str, pod: Pod, node_name: str, host_ip: str) -> str:
    metadata = pod.get("metadata", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": node_name,
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.podIP": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = _FIELD_LABEL.match(path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f'fieldRef "{path}" is not supported by the local runner')


def container_env(
    pod: Pod,
    container: Container,
    mounts: Sequence[Mount],
    *,
    base: Mapping[str, str],
    termination_log: Path,
    node_name: str,
    host_ip: str,
) -> dict[str, str]:
    """The process environment: image-ish base, the pod's env, host paths for mount paths."""
    if container.get("envFrom"):
        raise ContainerConfigError("envFrom is not supported by the local runner")
    env = dict(base)
    env["HOSTNAME"] = str(pod.get("metadata", {}).get("name", ""))
    for item in container.get("env") or []:
        name = str(item["name"])
        source = item.get("valueFrom")
        if source is None:
            # Rewrite before expanding: an expanded $(VAR) is already a host path,
            # and one under /tmp must not be rewritten again by a /tmp mount.
            env[name] = expand_references(rewrite_path(str(item.get("value", "")), mounts), env)
        elif "fieldRef" in source:
            env[name] = field_ref_value(str(source["fieldRef"].get("fieldPath", "")), pod, node_name, host_ip)
        else:
            kinds = ", ".join(sorted(source))
            raise ContainerConfigError(f'env "{name}" uses valueFrom {kinds}, which the local runner does not support')
    env[TERMINATION_LOG_ENV] = str(termination_log)
    env[POD_MARKER_ENV] = str(pod.get("metadata", {}).get("uid", ""))
    return env


def working_dir(container: Container, mounts: Sequence[Mount], scratch: Path) -> Path:
    """workingDir when it lies in a mount; otherwise a scratch dir (the image's
    filesystem does not exist here)."""
    wanted = container.get("workingDir")
    if wanted:
        rewritten = rewrite_path(str(wanted), mounts)
        if rewritten != wanted:
            return Path(rewritten)
    return scratch


# --- one container's plan -----------------------------------------------------------


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    read_only: list[Path]
    hidden: list[Path]
    termination_log: Path
    fallback_to_logs: bool
    mounts: list[Mount] = field(default_factory=list)
    max_file_bytes: int | None = None
    max_memory_bytes: int | None = None


@dataclass(frozen=True)
class PodLayout:
    """Where one pod lives on the host."""

    root: Path

    @property
    def empty_dirs(self) -> Path:
        return self.root / "volumes"

    def termination_log(self, container: str) -> Path:
        return self.root / "termination" / container

    def log_file(self, container: str) -> Path:
        return self.root / "logs" / f"{container}.log"

    def scratch(self, container: str) -> Path:
        return self.root / "scratch" / container


def plan_container(
    pod: Pod,
    container: Container,
    *,
    volumes: Mapping[str, HostVolume],
    layout: PodLayout,
    config: RunnerConfig,
    host_env: Mapping[str, str],
    other_pods: Sequence[Path] = (),
    which: Callable[..., str | None] = shutil.which,
) -> ContainerPlan:
    """Everything needed to start one container, or the PodConfigError a kubelet would report."""
    name = str(container["name"])
    mounts = container_mounts(container, volumes)
    scratch = layout.scratch(name)
    base = {key: host_env[key] for key in config.pass_env if key in host_env}
    base["HOME"] = str(scratch)
    tmp = rewrite_path("/tmp", mounts)
    base["TMPDIR"] = tmp if tmp != "/tmp" else str(scratch)  # never the host's shared /tmp
    env = container_env(
        pod,
        container,
        mounts,
        base=base,
        termination_log=layout.termination_log(name),
        node_name=config.node_name,
        host_ip=config.host_ip,
    )
    argv = container_argv(container, env, config.all_images(), config.all_commands(), mounts)
    argv = resolve_executable(argv, env.get("PATH"), which)
    candidates = [
        *(volume.path for volume in volumes.values()),
        *pod_mount_paths(pod, volumes),
        *(Path(path) for path in config.claims.values()),
        *other_pods,  # with concurrency > 1, another run's emptyDirs sit next door
    ]
    return ContainerPlan(
        name=name,
        image=str(container.get("image", "")),
        argv=argv,
        env=env,
        cwd=working_dir(container, mounts, scratch),
        read_only=sorted({mount.host_path for mount in mounts if mount.read_only}),
        hidden=hidden_paths(candidates, mounts),
        termination_log=layout.termination_log(name),
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        mounts=mounts,
        # Ephemeral storage is enforced as a cap on any one file's size; memory by
        # sampling the processes' resident size (no cgroup here).
        max_file_bytes=limit_bytes(container, "ephemeral-storage"),
        max_memory_bytes=limit_bytes(container, "memory"),
    )


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_SUFFIX |= {f"{unit}i": 1024 ** (power + 1) for power, unit in enumerate("KMGTPE")}


def quantity_bytes(quantity: str) -> int | None:
    """``1Gi`` -> 1073741824; None for forms this runner does not need (e.g. ``1e3``)."""
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _SUFFIX[match.group(2) or ""])


def limit_bytes(container: Container, resource: str) -> int | None:
    """The container's limit of ``memory`` or ``ephemeral-storage`` in bytes, if set."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get(resource)
    return quantity_bytes(str(limit)) if limit is not None else None


# --- termination messages -------------------------------------------------------------


def log_tail(output: str) -> str:
    lines = output.splitlines(keepends=True)[-MAX_FALLBACK_LOG_LINES:]
    tail = "".join(lines).encode("utf-8")[-MAX_FALLBACK_LOG_BYTES:]
    return tail.decode("utf-8", "replace")


def termination_message(file_tail: bytes, output: str, exit_code: int | None, fallback_to_logs: bool) -> str:
    """What lands in ``state.terminated.message``: the file (its last 4096 bytes),
    or, with FallbackToLogsOnError and a failure, the tail of the output."""
    message = file_tail[-MAX_TERMINATION_MESSAGE:].decode("utf-8", "replace")
    if not message and fallback_to_logs and exit_code != 0:
        return log_tail(output)
    return message


# --- which pods are ours -----------------------------------------------------------------

PodAction = Literal["bind", "run", "orphaned", "finalize", "unschedulable", "ignore"]


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def tolerates(tolerations: Sequence[Mapping[str, Any]] | None, taints: Sequence[Mapping[str, Any]]) -> bool:
    """Loosely: every NoSchedule/NoExecute taint has a toleration naming its key (or all keys)."""
    for taint in taints:
        if taint.get("effect") == "PreferNoSchedule":
            continue
        if not any(not tol.get("key") or tol.get("key") == taint.get("key") for tol in tolerations or []):
            return False
    return True


def pod_action(
    pod: Pod, node_name: str, node_labels: Mapping[str, str], taints: Sequence[Mapping[str, Any]]
) -> PodAction:
    """What the runner should do with a labelled pod it just saw."""
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {}) or {}
    bound_to = spec.get("nodeName") or ""
    if bound_to and bound_to != node_name:
        return "ignore"
    if metadata.get("deletionTimestamp"):
        return "finalize" if bound_to else "ignore"
    phase = status.get("phase", "Pending")
    if phase in ("Succeeded", "Failed"):
        return "ignore"
    if not bound_to:
        if spec.get("schedulingGates"):
            return "ignore"
        if selector_matches(spec.get("nodeSelector"), node_labels) and tolerates(spec.get("tolerations"), taints):
            return "bind"
        return "unschedulable"
    return "run" if phase == "Pending" else "orphaned"

"""Run a command with no network, read-only input and hidden paths: the local stand-in for the
sandbox pod's vendor container, used by ``lightbox vendor check`` and the development runner.

The command runs in new pid, network, mount, IPC and UTS namespaces (util-linux ``unshare``; as root,
else inside a user namespace with ``unshare -r``). The network namespace has no interface up,
``read_only`` paths are bind-mounted read-only onto themselves, ``hidden`` paths are covered by
an empty read-only tmpfs (files by /dev/null), and the command runs without any capability, so
it cannot undo those mounts. At the timeout, or when the processes' resident memory goes over
``max_memory_bytes`` (sampled, as a stand-in for a cgroup limit), the whole namespace is killed. If any of that
cannot be set up, ``IsolationUnavailable`` is raised: the command never runs un-isolated.

With a ``View`` (``lightbox vendor check``) the command sees nothing of the host but what the
view lists: a private root with the system's runtime (/usr, /bin, /lib*), a minimal /etc, the
view's read-only binds, a writable output bounded in bytes and files, a private /tmp, fresh
/proc and a few devices. It runs as an unprivileged uid/gid (65532, the run pod's) in a user
namespace of its own with a process limit; what it left in /output is copied to the host
directory afterwards, and the result says what it tried: the process and file limits reached,
files written outside /output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_HELPER = Path(__file__).with_name("_isolate_helper.py")


class IsolationUnavailable(RuntimeError):
    """Isolation could not be set up; ``reason`` says why. The command was not run."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class IsolationResult:
    returncode: int | None  # negative: killed by that signal; None: killed at the timeout
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    output_truncated: bool
    network_attempts: int = 0  # packets the command tried to route (and could not)
    memory_exceeded: bool = False  # killed for going over ``max_memory_bytes``
    peak_memory_bytes: int = 0  # largest sampled resident size (0 when not watched)
    # Only with a View:
    peak_tasks: int = 0  # most processes and threads seen at once (sampled, and at exit)
    process_limit_reached: bool = False  # peak_tasks reached View.max_processes: forks were refused
    output_files: int = 0  # files and directories created in the output
    output_bytes: int = 0
    output_files_full: bool = False  # the output's file limit was reached: creating more failed
    output_space_full: bool = False  # the output's size limit was reached: writing more failed
    outside_files: int = 0  # files and directories left in the private /tmp (outside the output)
    outside_bytes: int = 0
    left_behind: int = 0  # output entries not copied back: FIFOs, sockets, paths too long


# The run pod's non-root user (operator/builders.py NONROOT_UID).
SANDBOX_UID = SANDBOX_GID = 65532
# The runtime every command may use, read-only; each only where the host has it.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# From the host's /etc only what programs need to start and link; no users, keys or config.
ETC_ALLOWED = (
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
    "host.conf", "mime.types", "os-release", "timezone",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
# Inside the view; also the mount points of our own file systems, which binds must not shadow.
RESERVED = ("/etc", "/dev", "/proc", "/tmp", "/sys", "/run")


@dataclass(frozen=True)
class View:
    """A private root for the command. ``binds``: (host path, path in the view), read-only.
    ``output_host`` receives what the command left in ``output`` (a tmpfs of at most
    ``max_output_bytes`` and ``max_output_files``). ``max_processes`` bounds processes and
    threads (RLIMIT_NPROC, counted in the command's own user namespace)."""

    binds: Sequence[tuple[Path, str]]
    output_host: Path
    output: str = "/output"
    max_output_bytes: int = 64 << 20
    max_output_files: int = 10000
    max_tmp_bytes: int = 64 << 20
    max_tmp_files: int = 10000
    max_processes: int = 512
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID


# Most entries looked at for unix sockets in the directories a view shows (see find_sockets).
MAX_SCANNED_ENTRIES = 500_000


def find_sockets(root: Path, limit: int = MAX_SCANNED_ENTRIES) -> list[Path]:
    """Unix sockets under ``root`` (not following links). A read-only mount does not stop a
    connect(), so a host socket in a directory the view shows would be a way out: each found is
    covered. Raises IsolationUnavailable past ``limit`` entries rather than show unchecked ones."""
    found: list[Path] = []
    seen = 0
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > limit:
                    raise IsolationUnavailable(
                        f"more than {limit} files under {root} to check for unix sockets: show a narrower directory"
                    )
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif not entry.is_file(follow_symlinks=False) and stat.S_ISSOCK(
                        entry.stat(follow_symlinks=False).st_mode
                    ):
                        found.append(Path(entry.path))
                except OSError:
                    continue
    return found


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def view_plan(
    view: View, output_owner: tuple[int, int], host_etc: Path = Path("/etc"), host_root: Path = Path("/")
) -> list[list[str | list[str]]]:
    """The steps that build the private root, in order (pure: reads only which host paths exist).
    ``output_owner``: the command's uid/gid as the mounting process sees them. Binds are refused
    where they would shadow the view's own mounts or expose the host root."""
    plan: list[list[str | list[str]]] = []
    for system in SYSTEM_DIRS:
        host = host_root / system.lstrip("/")
        if host.is_symlink():
            plan.append(["symlink", system, os.readlink(host)])
        elif host.is_dir():
            plan.append(["bind", system, str(host)])
    passwd = (
        "root:x:0:0:root:/:/usr/sbin/nologin\n"
        f"sandbox:x:{view.uid}:{view.gid}:sandbox:{view.output}:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nsandbox:x:{view.gid}:\n"
    plan += [
        ["file", "/etc/passwd", passwd],
        ["file", "/etc/group", group],
        ["file", "/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"],
    ]
    for name in ETC_ALLOWED:
        host = host_etc / name
        if host.is_symlink():
            plan.append(["symlink", f"/etc/{name}", os.readlink(host)])
        elif host.exists():
            plan.append(["bind", f"/etc/{name}", str(host)])
    plan.append(["dev", "/dev", list(DEVICES)])
    plan += [["symlink", f"/dev/{n}", f"/proc/self/fd/{i}"] for i, n in enumerate(("stdin", "stdout", "stderr"))]
    plan += [
        ["symlink", "/dev/fd", "/proc/self/fd"],
        ["tmpfs", "/dev/shm", f"size={view.max_tmp_bytes},nr_inodes={view.max_tmp_files + 1},mode=1777"],
        ["proc", "/proc"],
        ["tmpfs", "/tmp", f"size={view.max_tmp_bytes},nr_inodes={view.max_tmp_files + 1},mode=1777"],
        # +1: the root directory of the file system takes an inode of its own.
        [
            "tmpfs",
            view.output,
            f"size={view.max_output_bytes},nr_inodes={view.max_output_files + 1},mode=0755,"
            f"uid={output_owner[0]},gid={output_owner[1]}",
        ],
    ]
    seen: set[str] = set()
    for host, target in sorted(view.binds, key=lambda b: (b[1].count("/"), b[1])):
        target = os.path.normpath(target)
        if not target.startswith("/") or target == "/":
            raise ValueError(f"view path {target!r} must be an absolute path below /")
        # Below /tmp is fine (a bind inside the private /tmp); /tmp itself would replace it.
        if target == "/tmp" or any(_inside(target, r) for r in RESERVED if r != "/tmp") or _inside(target, view.output):
            raise ValueError(f"view path {target} would cover the sandbox's own {target.split('/')[1]}")
        if any(_inside(target, s) for s in SYSTEM_DIRS) and os.path.realpath(host) == target:
            continue  # already visible through the system directories
        if any(_inside(target, t) for t in seen):
            continue  # already visible through a bind of a parent
        seen.add(target)
        plan.append(["bind", target, os.path.realpath(host)])
    return plan


# Memory is sampled, not enforced by a cgroup: an allocation burst shorter than
# one interval can briefly overshoot before the kill.
MEMORY_SAMPLE_SECONDS = 0.1


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc (pages shared
    between them count once per process, so the sum errs on the high side)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        parent = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


class _CappedReader(threading.Thread):
    """Keeps the first ``limit`` bytes of a stream and drains the rest, so a chatty command
    neither blocks on a full pipe nor fills our memory."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.limit = stream, limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def run(self) -> None:
        while chunk := self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536):
            room = self.limit - self.size
            if room > 0:
                self.chunks.append(chunk[:room])
                self.size += min(room, len(chunk))
            if len(chunk) > room:
                self.truncated = True

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def _unshare_command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("util-linux 'unshare' is not installed")
    # --ipc: the host's SysV shared memory, semaphores and message queues would be a channel out.
    cmd = [unshare, "--net", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child=SIGKILL", "--mount-proc",
           "--propagation", "private"]
    if os.geteuid() != 0:
        cmd.append("--map-root-user")
    return cmd + [sys.executable, "-I", "-S", str(_HELPER)]


def _absolute(paths: Sequence[Path]) -> list[str]:
    return [os.path.realpath(p) for p in paths]


def run_isolated(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    read_only: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    timeout: float,
    max_output_bytes: int = 1 << 20,
    cwd: Path | None = None,
    max_file_bytes: int | None = None,
    max_memory_bytes: int | None = None,
    view: View | None = None,
) -> IsolationResult:
    """Run ``argv`` isolated; ``max_output_bytes`` caps each of stdout and stderr as captured,
    ``max_file_bytes`` (optional) caps the size of any file the command writes (RLIMIT_FSIZE),
    ``max_memory_bytes`` (optional) kills the namespace when its resident memory goes over.
    With ``view``, the command sees only that view (``cwd`` is then a path in the view) and
    ``read_only`` paths are bound into it at the same path."""
    if not argv:
        raise ValueError("empty command")
    if view is not None:
        return _run_in_view(argv, env=env, read_only=read_only, hidden=hidden, timeout=timeout,
                            max_output_bytes=max_output_bytes, cwd=cwd, max_file_bytes=max_file_bytes,
                            max_memory_bytes=max_memory_bytes, view=view)
    if cwd is not None and not Path(cwd).is_dir():
        raise ValueError(f"working directory {cwd} does not exist")
    for p in read_only:
        if not Path(p).exists():
            raise IsolationUnavailable(f"read-only path {p} does not exist")
    for ro in _absolute(read_only):
        for hide in _absolute(hidden):
            if Path(ro).is_relative_to(hide):
                # hidden paths are mounted last, so this would cover the input: a caller bug
                raise ValueError(f"read-only path {ro} lies inside hidden path {hide}")
    spec = {
        "argv": list(argv),
        "env": dict(env),
        "cwd": str(cwd) if cwd is not None else "/",
        "read_only": _absolute(read_only),
        "hidden": _absolute(hidden),
        "max_file_bytes": max_file_bytes,
    }
    return _launch(spec, timeout=timeout, max_output_bytes=max_output_bytes, max_memory_bytes=max_memory_bytes)


def _run_in_view(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    read_only: Sequence[Path],
    hidden: Sequence[Path],
    timeout: float,
    max_output_bytes: int,
    cwd: Path | None,
    max_file_bytes: int | None,
    max_memory_bytes: int | None,
    view: View,
) -> IsolationResult:
    for p in read_only:
        if not Path(p).exists():
            raise IsolationUnavailable(f"read-only path {p} does not exist")
    if not view.output_host.is_dir():
        raise ValueError(f"output directory {view.output_host} does not exist")
    binds = [*view.binds, *((Path(p), os.path.realpath(p)) for p in read_only)]
    for host, target in binds:
        if not Path(host).exists():
            raise IsolationUnavailable(f"view path {host} does not exist")
        # Hidden paths are covered in the view, after the binds: one inside would be covered.
        for hide in _absolute(hidden):
            if Path(target).is_relative_to(hide):
                raise ValueError(f"view path {target} lies inside hidden path {hide}")
    covered = [*hidden]
    for host, target in binds:
        host_real = Path(os.path.realpath(host))
        if host_real.is_dir() and not any(host_real.is_relative_to(d) for d in SYSTEM_DIRS):
            covered += [Path(target) / sock.relative_to(host_real) for sock in find_sockets(host_real)]
    hidden = covered
    root_mode = os.geteuid() == 0
    # Real root maps the sandbox ids to themselves; in a user namespace only our own id
    # (root there) can be mapped, and the host sees our uid.
    outside = (view.uid, view.gid) if root_mode else (0, 0)
    plan = view_plan(View(**{**view.__dict__, "binds": binds}), outside)
    root = tempfile.mkdtemp(prefix="lightbox-view-")
    spec = {
        "argv": list(argv),
        "env": dict(env),
        "cwd": str(cwd) if cwd is not None else "/",
        "read_only": [],
        "hidden": _absolute(hidden),
        "view": {
            "root": root,
            "plan": plan,
            "output": view.output,
            "output_host": str(view.output_host),
            "uid": view.uid,
            "gid": view.gid,
            "outside_uid": outside[0],
            "outside_gid": outside[1],
            "drop_groups": root_mode,
            "max_processes": view.max_processes,
            "max_file_bytes": max_file_bytes,
        },
    }
    try:
        result = _launch(spec, timeout=timeout, max_output_bytes=max_output_bytes, max_memory_bytes=max_memory_bytes)
    finally:
        try:
            os.rmdir(root)
        except OSError:
            pass  # still a mount point only in the namespace, which is gone; or already removed
    result.process_limit_reached = result.peak_tasks >= view.max_processes
    return result


def _launch(
    spec: Mapping[str, object], *, timeout: float, max_output_bytes: int, max_memory_bytes: int | None
) -> IsolationResult:
    status_r, status_w = os.pipe()
    spec = {**spec, "status_fd": status_w}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            _unshare_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    except OSError as exc:
        os.close(status_r)
        os.close(status_w)
        raise IsolationUnavailable(f"cannot start unshare: {exc.strerror}") from exc
    os.close(status_w)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    readers = [_CappedReader(proc.stdout, max_output_bytes), _CappedReader(proc.stderr, max_output_bytes)]
    for r in readers:
        r.start()
    status_lines: list[str] = []
    status_reader = threading.Thread(
        target=lambda: status_lines.extend(os.fdopen(status_r).read().splitlines()), daemon=True
    )
    status_reader.start()
    try:
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = memory_exceeded = False
    peak = 0
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        try:
            proc.wait(timeout=min(left, MEMORY_SAMPLE_SECONDS) if max_memory_bytes is not None else left)
            break
        except subprocess.TimeoutExpired:
            if max_memory_bytes is None:
                continue
            peak = max(peak, tree_rss_bytes(proc.pid))
            if peak > max_memory_bytes:
                memory_exceeded = True
                break
    if timed_out or memory_exceeded:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    seconds = time.monotonic() - started
    for r in readers:
        r.join(timeout=5)
    status_reader.join(timeout=5)
    status = {}
    for line in status_lines:
        try:
            status.update(json.loads(line))
        except ValueError:
            continue
    if "setup_error" in status:
        raise IsolationUnavailable(f"isolation setup failed: {status['setup_error']}")
    if not status.get("ready"):
        if memory_exceeded:
            raise IsolationUnavailable(
                f"isolation setup alone needs more than the memory limit of {max_memory_bytes} bytes"
            )
        if timed_out:
            raise IsolationUnavailable("isolation setup did not finish before the timeout")
        detail = readers[1].data.decode(errors="replace").strip().splitlines()
        raise IsolationUnavailable(f"unshare failed (exit {proc.returncode}): {detail[-1] if detail else 'no message'}")
    returncode = None if timed_out or memory_exceeded else status.get("returncode")
    return IsolationResult(
        returncode=returncode,
        timed_out=timed_out,
        seconds=seconds,
        stdout=readers[0].data,
        stderr=readers[1].data,
        output_truncated=readers[0].truncated or readers[1].truncated,
        network_attempts=int(status.get("network_attempts", 0)),
        memory_exceeded=memory_exceeded,
        peak_memory_bytes=peak,
        peak_tasks=int(status.get("peak_tasks", 0)),
        output_files=int(status.get("output_files", 0)),
        output_bytes=int(status.get("output_bytes", 0)),
        output_files_full=bool(status.get("output_inodes_full", False)),
        output_space_full=bool(status.get("output_space_full", False)),
        outside_files=int(status.get("tmp_files", 0)),
        outside_bytes=int(status.get("tmp_bytes", 0)),
        left_behind=int(status.get("left_behind", 0)),
    )

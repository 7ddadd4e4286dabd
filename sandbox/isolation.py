"""Run a command with no network, read-only input and hidden paths: the local stand-in for the
sandbox pod's vendor container, used by ``lightbox vendor check`` and the development runner.

The command runs in new pid, network and mount namespaces (util-linux ``unshare``; as root,
else inside a user namespace with ``unshare -r``). The network namespace has no interface up,
``read_only`` paths are bind-mounted read-only onto themselves, ``hidden`` paths are covered by
an empty read-only tmpfs (files by /dev/null), and the command runs without any capability, so
it cannot undo those mounts. At the timeout, or when the processes' resident memory goes over
``max_memory_bytes`` (sampled, as a stand-in for a cgroup limit), the whole namespace is killed. If any of that
cannot be set up, ``IsolationUnavailable`` is raised: the command never runs un-isolated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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
    cmd = [unshare, "--net", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", "--propagation", "private"]
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
) -> IsolationResult:
    """Run ``argv`` isolated; ``max_output_bytes`` caps each of stdout and stderr as captured,
    ``max_file_bytes`` (optional) caps the size of any file the command writes (RLIMIT_FSIZE),
    ``max_memory_bytes`` (optional) kills the namespace when its resident memory goes over."""
    if not argv:
        raise ValueError("empty command")
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
    status_r, status_w = os.pipe()
    spec = {
        "argv": list(argv),
        "env": dict(env),
        "cwd": str(cwd) if cwd is not None else "/",
        "read_only": _absolute(read_only),
        "hidden": _absolute(hidden),
        "max_file_bytes": max_file_bytes,
        "status_fd": status_w,
    }
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
    status_reader = threading.Thread(target=lambda: status_lines.extend(os.fdopen(status_r).read().splitlines()), daemon=True)
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
            raise IsolationUnavailable(f"isolation setup alone needs more than the memory limit of {max_memory_bytes} bytes")
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
    )

"""Debian packages the development tools need (mmdebstrap, containerd, runc, ...), installed on demand.

Shared by the image builder (``devtools/images.py``) and the real node (``devtools``' node
module): one place decides how a missing tool is installed, so a fresh machine (CI's included)
gets what the project needs from its own code instead of from hand-run commands.

Only root on a Debian-like system installs anything; elsewhere ``ensure_debian_packages`` raises
``MissingPackages`` naming the packages, so a caller can skip with that line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

# apt waits for a lock held by another installer (two helpers installing at once) instead of failing.
_APT_LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=600"]


class MissingPackages(RuntimeError):
    def __init__(self, names: Sequence[str], reason: str) -> None:
        self.names = tuple(names)
        self.reason = reason
        super().__init__(f"Debian packages {', '.join(names)} are missing and cannot be installed: {reason}")


def missing_packages(names: Sequence[str], run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str]:
    """The names whose dpkg status is not ``install ok installed``."""
    if shutil.which("dpkg-query") is None:
        return list(names)
    missing = []
    for name in names:
        done = run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if done.returncode != 0 or done.stdout.strip() != "install ok installed":
            missing.append(name)
    return missing


def ensure_debian_packages(
    names: Sequence[str],
    *,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> list[str]:
    """Install the packages among ``names`` that are missing; return the ones installed.

    ``apt-get update`` runs once before installing, since on a new machine the package lists may be
    absent or stale. Raises MissingPackages when they cannot be installed (not root, no apt-get, or
    apt-get failed: its last lines are in the message).
    """
    missing = missing_packages(names, run)
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise MissingPackages(missing, "apt-get is not available (not a Debian-like system)")
    if os.geteuid() != 0:
        raise MissingPackages(missing, f"installing needs root: run `apt-get install {' '.join(missing)}` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing Debian packages: {' '.join(missing)} (apt-get)")
    for argv in (
        ["apt-get", *_APT_LOCK_WAIT, "update", "-q"],
        ["apt-get", *_APT_LOCK_WAIT, "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        done = run(argv, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
            raise MissingPackages(missing, f"`{' '.join(argv)}` exited {done.returncode}:\n{tail}")
    still = missing_packages(missing, run)
    if still:
        raise MissingPackages(still, "apt-get reported success but they are still not installed")
    return missing

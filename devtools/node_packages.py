"""The Debian packages a real node needs, installed by the project itself when missing.

CI machines start without them, so ``lightbox node up`` (and the real-node test
tier in CI) installs them with apt-get rather than relying on a manual step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

Log = Callable[[str], None]

#: Package -> a file it provides (how we tell it is usable without dpkg).
NODE_PACKAGES: dict[str, str] = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "ipset": "/usr/sbin/ipset",
    "iptables": "/usr/sbin/iptables",
    "conntrack": "/usr/sbin/conntrack",
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "umoci": "/usr/bin/umoci",
}


class PackageError(RuntimeError):
    pass


def missing_packages(packages: dict[str, str] = NODE_PACKAGES,
                     exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    return [name for name, path in packages.items() if not exists(path)]


def install_command(names: Sequence[str]) -> list[list[str]]:
    """apt-get update, then install only ``names`` (no recommends; waits for another apt's lock)."""
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    return [["apt-get", *lock, "update"],
            ["apt-get", *lock, "install", "-y", "--no-install-recommends", *names]]


def ensure_packages(log: Log, *, packages: dict[str, str] = NODE_PACKAGES) -> list[str]:
    """Install the missing packages; returns their names. Raises PackageError saying what to do."""
    missing = missing_packages(packages)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise PackageError(f"missing Debian packages {', '.join(missing)} and not root to install them: "
                           f"sudo apt-get install {' '.join(missing)}")
    if shutil.which("apt-get") is None:
        raise PackageError(f"missing packages {', '.join(missing)} and no apt-get here; install them with the "
                           "system's package manager")
    log(f"installing {', '.join(missing)} with apt-get (about a minute)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in install_command(missing):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if result.returncode != 0:
            raise PackageError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n"
                               f"{(result.stderr or result.stdout).strip()[-3000:]}")
    still = missing_packages(packages)
    if still:
        raise PackageError(f"apt-get installed {', '.join(missing)} but {', '.join(still)} still lack "
                           f"{', '.join(packages[n] for n in still)}")
    return missing

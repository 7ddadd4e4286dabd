"""The local development stack around a control plane: the operator as a
process and the development runner, started the same way by the demo and the
integration tests.

DEVELOPMENT ONLY. The probe targets default to loopback addresses: inside the
runner's network namespace nothing at all is reachable, and outside it no
probe traffic may leave this machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from lightbox.operator.config import DEFAULT_TRUSTED_IMAGE

# Loopback stand-ins for "cluster DNS" and "outside the cluster" in local runs.
LOCAL_PROBE_DNS = "127.0.0.53:53"
LOCAL_PROBE_OUTSIDE = "127.0.0.2:443"


class OperatorProcess:
    """``python -m lightbox.operator`` as a child process logging to a file, so it can be killed like a crashed pod."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        namespaces: tuple[str, ...] = (),
        trusted_image: str = DEFAULT_TRUSTED_IMAGE,
        cwd: Path | None = None,
        **env: str,
    ):
        self.kubeconfig, self.log, self.namespaces = kubeconfig, log, namespaces
        self.trusted_image, self.cwd, self.env = trusted_image, cwd, env
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "lightbox.operator",
            "--metrics-port", "0",
            "--kubeconfig", str(self.kubeconfig),
            "--trusted-image", self.trusted_image,
            "--probe-dns", LOCAL_PROBE_DNS,
            "--probe-outside", LOCAL_PROBE_OUTSIDE,
        ]
        for namespace in self.namespaces:
            argv += ["--namespace", namespace]
        return argv

    def start(self, **env: str) -> OperatorProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            handle.write(f"\n===== start {env} =====\n".encode())
            handle.flush()
            self.process = subprocess.Popen(
                self.argv(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **env},
                cwd=self.cwd,
            )
        return self

    def metrics_port(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            found = re.findall(rb"metrics on :(\d+)", self.log.read_bytes())
            if found:
                return int(found[-1])
            time.sleep(0.2)
        raise RuntimeError(f"operator never reported its metrics port:\n{self.tail()}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"operator did not exit within {timeout}s:\n{self.tail()}") from None

    def check(self) -> None:
        """Fail fast when the operator died instead of waiting out a timeout."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

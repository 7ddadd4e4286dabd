"""``lightbox probe``: does anything answer from inside a sandbox pod?

Run by the operator in a pod confined exactly like a vendor run. It tries the
API server, the cluster DNS server and an address outside the cluster, each
with a short timeout. A refused connection counts as an answer: something on
the path replied. Only silence (timeouts, unreachable networks) is isolation.

Exit 0 and ``{"isolated": true, ...}`` when nothing answered; exit 1 and
``{"isolated": false, "answered": [...]}`` otherwise. The JSON goes to stdout
and to the termination log (``$LIGHTBOX_TERMINATION_LOG``, else
/dev/termination-log when writable), where the operator reads it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from lightbox.api.run import TERMINATION_LOG_ENV, TERMINATION_LOG_PATH

# errno values that mean "no route, nobody there": the network is cut.
SILENT_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL, errno.EACCES, errno.EPERM}
)


@dataclass(frozen=True)
class Check:
    target: str
    kind: str
    answered: bool
    detail: str


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """host:port, [v6]:port, https://host:port or a bare host."""
    if "://" in address:
        parts = urlsplit(address)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port


def tcp_check(kind: str, address: str, default_port: int, timeout: float) -> Check:
    host, port = split_address(address, default_port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Check(address, kind, False, f"name not resolved: {exc}")
    for family, socktype, proto, _, sockaddr in infos[:2]:
        with socket.socket(family, socktype, proto) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(sockaddr)
            except ConnectionRefusedError:
                return Check(address, kind, True, "connection refused (a host replied)")
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in SILENT_ERRNOS:
                    continue
                return Check(address, kind, True, f"unexpected reply: {exc}")
            return Check(address, kind, True, "TCP connection established")
    return Check(address, kind, False, "no answer")


def dns_query(name: str) -> tuple[int, bytes]:
    ident = random.randrange(1 << 16)  # noqa: S311  (not security relevant)
    header = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
    return ident, header + question


def dns_check(address: str, timeout: float, name: str = "kubernetes.default.svc.cluster.local") -> Check:
    host, port = split_address(address, 53)
    ident, packet = dns_query(name)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return Check(address, "dns", False, f"name not resolved: {exc}")
    family, socktype, proto, _, sockaddr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, sockaddr)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(2048)
                if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == ident:
                    return Check(address, "dns", True, "DNS server replied")
        except ConnectionRefusedError:
            return Check(address, "dns", True, "port unreachable (a host replied)")
        except TimeoutError:
            pass
        except OSError as exc:
            if exc.errno not in SILENT_ERRNOS:
                return Check(address, "dns", True, f"unexpected reply: {exc}")
    return Check(address, "dns", False, "no answer")


def run_checks(api_server: str | None, dns: list[str], outside: list[str], timeout: float) -> list[Check]:
    jobs: list[Callable[[], Check]] = []
    if api_server:
        jobs.append(lambda: tcp_check("api-server", api_server, 443, timeout))
    jobs += [lambda a=a: dns_check(a, timeout) for a in dns]
    jobs += [lambda a=a: tcp_check("outside", a, 443, timeout) for a in outside]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _write_termination_log(text: str) -> None:
    target = os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG_PATH
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        pass  # Outside a pod there may be no termination log; stdout still has the result.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightbox probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-server", help="host:port or URL; default $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT")
    parser.add_argument("--dns", action="append", default=[], help="cluster DNS server host[:port] (repeatable)")
    parser.add_argument("--outside", action="append", default=[], help="an address outside the cluster (repeatable)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per check")
    args = parser.parse_args(argv)

    api_server = args.api_server
    if not api_server and os.environ.get("KUBERNETES_SERVICE_HOST"):
        api_server = f"{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    checks = run_checks(api_server, args.dns, args.outside, args.timeout)
    answered = [f"{c.kind} {c.target} ({c.detail})" for c in checks if c.answered]
    result = {"isolated": not answered, "answered": answered, "checked": [c.target for c in checks]}
    text = json.dumps(result, separators=(",", ":"))
    if len(text) > 4000:
        result = {"isolated": not answered, "answered": answered[:5]}
        text = json.dumps(result, separators=(",", ":"))[:4000]
    _write_termination_log(text)
    print(json.dumps({**result, "checks": [asdict(c) for c in checks]}))
    return 0 if not answered else 1


if __name__ == "__main__":
    sys.exit(main())

"""``lightbox probe``: does anything answer from inside a sandbox pod?

Run by the operator in a pod confined exactly like a vendor run. It tries the
API server, the cluster DNS server, the node, the pod's gateway and an address
outside the cluster (``pod_targets``, the in-pod check's list too), each with a
short timeout. A connection refused by the host (a TCP reset) counts as
an answer: the host's stack replied, so packets reach it. A SYN stopped by a
packet filter that says so with an ICMP error (kube-router's REJECT, kube-proxy
for a Service without endpoints) is not: no TCP stack answers a SYN with ICMP,
so the packet died in the filter (docs/isolation.md). It also counts the GPUs
the container sees (it requests none). The stage step of every run pod reuses
these checks (``lightbox.sandbox.incheck``).

It judges as the in-pod check does (``incheck.run_rounds``): isolated only after several
silent rounds in a row, not isolated if those have not come by a bound, so a policy
engine's window for the new probe pod is waited out instead of reported.

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
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from lightbox.api.run import NODE_IP_ENV, TERMINATION_LOG_ENV, TERMINATION_LOG_PATH, IsolationCheckConfig

# errno values that mean "no route, nobody there": the network is cut.
SILENT_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
        errno.EACCES,
        errno.EPERM,
    }
)

# Linux's extended socket errors (ip(7) IP_RECVERR): with them on, an ICMP error that
# ends a connection attempt leaves its sender's address in the socket's error queue.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3


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


def _want_icmp_errors(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    elif family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)


def offender_address(raw: bytes) -> str:
    """The host of a ``struct sockaddr`` (in, in6) as text; "" for anything else."""
    if len(raw) >= 8 and struct.unpack("=H", raw[:2])[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and struct.unpack("=H", raw[:2])[0] == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return ""


def icmp_offender(sock: socket.socket) -> str | None:
    """Who sent the ICMP error that ended the last attempt, from the error queue
    (``struct sock_extended_err`` then the offender's sockaddr); None when no ICMP
    error is queued, i.e. the refusal was a TCP reset."""
    try:
        _, ancillary, _, _ = sock.recvmsg(1, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:
        return None
    for _level, _type, data in ancillary:
        if len(data) >= 16 and data[4] in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            return offender_address(data[16:])
    return None


def refusal(kind: str, target_host: str, offender: str | None) -> tuple[bool, str]:
    """(answered, detail) for a refused TCP connection.

    A TCP stack refuses a SYN with a reset; an ICMP error in its place comes from a
    packet filter (iptables REJECT, as kube-router and kube-proxy use), so the SYN
    stopped there and nothing behind it was reached. One exception: an outside
    address whose own host sent the ICMP error was reached (only its firewall said no).
    """
    if offender is None:
        return True, "connection refused with a TCP reset (a host replied)"
    if kind == "outside" and offender == target_host:
        return True, f"rejected by the outside host {offender} itself (packets reach it)"
    return False, f"rejected by a packet filter at {offender or 'an unknown address'} (ICMP)"


def tcp_check(kind: str, address: str, default_port: int, timeout: float) -> Check:
    host, port = split_address(address, default_port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Check(address, kind, False, f"name not resolved: {exc}")
    for family, socktype, proto, _, sockaddr in infos[:2]:
        with socket.socket(family, socktype, proto) as sock:
            sock.settimeout(timeout)
            _want_icmp_errors(sock, family)
            try:
                sock.connect(sockaddr)
            except ConnectionRefusedError:
                answered, detail = refusal(kind, str(sockaddr[0]), icmp_offender(sock))
                if answered:
                    return Check(address, kind, True, detail)
                return Check(address, kind, False, detail)
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
        _want_icmp_errors(sock, family)
        try:
            sock.sendto(packet, sockaddr)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(2048)
                if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == ident:
                    return Check(address, "dns", True, "DNS server replied")
        except ConnectionRefusedError:
            # Port unreachable: no DNS server took the query (a filter's REJECT, or
            # nothing listening). Service NAT may rewrite who sent it, so the sender
            # is reported, not judged.
            offender = icmp_offender(sock)
            return Check(
                address,
                "dns",
                False,
                f"port unreachable (ICMP from {offender or 'an unknown address'}): no DNS server reached",
            )
        except TimeoutError:
            pass
        except OSError as exc:
            if exc.errno not in SILENT_ERRNOS:
                return Check(address, "dns", True, f"unexpected reply: {exc}")
    return Check(address, "dns", False, "no answer")


# -- what to try: one list for the namespace probe and the in-pod check ---------------

KUBELET_PORT = 10250
API_SERVER_PORT = 443
RTF_GATEWAY = 0x2
ROUTES = Path("/proc/net/route")

Kind = Literal["api-server", "dns", "node", "gateway", "outside"]


@dataclass(frozen=True)
class Target:
    kind: Kind
    address: str


def host_port(host: str, port: int | str) -> str:
    """``host:port``, bracketing an IPv6 host so the port stays separable."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_gateways(routes: str) -> list[str]:
    """Gateways of the default routes in ``/proc/net/route`` text (IPv4; the kernel
    prints addresses as little-endian hex)."""
    found: list[str] = []
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            destination, gateway, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
        except ValueError:
            continue
        if destination == 0 and flags & RTF_GATEWAY and gateway:
            address = socket.inet_ntoa(struct.pack("<I", gateway))
            if address not in found:
                found.append(address)
    return found


def pod_targets(
    api_servers: Sequence[str | None], dns: Sequence[str], outside: Sequence[str], env: Mapping[str, str], routes: str
) -> list[Target]:
    """Everything a sandboxed container must not reach: the API server (as every kubelet
    announces it in ``KUBERNETES_SERVICE_HOST``/``PORT``, and as given), the cluster DNS,
    the node (kubelet port), the pod's default gateways and the outside addresses."""
    out: list[Target] = []

    def add(kind: Kind, address: str | None) -> None:
        if address and Target(kind, address) not in out:
            out.append(Target(kind, address))

    if env.get("KUBERNETES_SERVICE_HOST"):
        add(
            "api-server",
            host_port(env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT") or API_SERVER_PORT),
        )
    for server in api_servers:
        add("api-server", server)
    for server in dns:
        add("dns", server)
    if env.get(NODE_IP_ENV):
        add("node", host_port(env[NODE_IP_ENV], KUBELET_PORT))
    for gateway in default_gateways(routes):
        add("gateway", host_port(gateway, KUBELET_PORT))
    for address in outside:
        add("outside", address)
    return out


def read_routes(path: Path = ROUTES) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def check_target(target: Target, timeout: float) -> Check:
    """One attempt; an error of the check itself counts as an answer (fail closed)."""
    try:
        if target.kind == "dns":
            return dns_check(target.address, timeout)
        return tcp_check(target.kind, target.address, API_SERVER_PORT, timeout)
    except Exception as exc:  # noqa: BLE001 - anything unexpected must stop the run, not pass it
        return Check(target.address, target.kind, True, f"check failed: {type(exc).__name__}: {exc}")


def check_all(targets: Sequence[Target], timeout: float) -> list[Check]:
    """Every target at once, so a round costs one timeout however many there are."""
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda target: check_target(target, timeout), targets))


# /dev/nvidia0, /dev/nvidia1, ...: one node per GPU the container may open (nvidiactl,
# nvidia-uvm and nvidia-modeset are shared control nodes, not GPUs).
_GPU_DEVICE = re.compile(r"nvidia[0-9]+")


@dataclass(frozen=True)
class GpuView:
    devices: tuple[str, ...]  # /dev/nvidiaN present: what the container can open
    listed: tuple[str, ...]  # /proc/driver/nvidia/gpus/*: what the driver shows it

    @property
    def count(self) -> int:
        """GPUs usable here. Device nodes decide: the NVIDIA driver is reached only
        through /dev/nvidiaN, while /proc/driver/nvidia/gpus lists every GPU of the node
        in a container the toolkit did not touch (procfs is not per container), so
        counting it would refuse every CPU-only run on a GPU node."""
        return len(self.devices)


def gpu_view(root: Path = Path("/")) -> GpuView:
    """The GPUs visible under ``root`` (a fake tree in tests)."""

    def names(folder: Path, keep: Callable[[str], bool]) -> tuple[str, ...]:
        try:
            return tuple(sorted(entry.name for entry in folder.iterdir() if keep(entry.name)))
        except OSError:
            return ()

    return GpuView(
        devices=names(root / "dev", lambda name: _GPU_DEVICE.fullmatch(name) is not None),
        listed=names(root / "proc" / "driver" / "nvidia" / "gpus", lambda name: True),
    )


def gpu_problem(view: GpuView, allowed: int) -> str | None:
    """Why the GPUs seen are more than requested, or None."""
    if view.count <= allowed:
        return None
    return (
        f"gpus: {view.count} visible ({', '.join('/dev/' + d for d in view.devices[:8])}) where {allowed} "
        "were requested; the node lets a container choose its GPUs (see docs/gpus.md)"
    )


def _write_termination_log(text: str) -> None:
    target = os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG_PATH
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        pass  # Outside a pod there may be no termination log; stdout still has the result.


def probe_rounds(
    targets: Sequence[Target],
    config: IsolationCheckConfig,
    probe: Callable[[Sequence[Target], float], list[Check]] = check_all,
) -> tuple[bool, list[str], list[list[Check]]]:
    """(isolated, what answered, the rounds) by the in-pod check's rule (``incheck.run_rounds``).

    A single try lands in a policy engine's window for a new pod (kube-router: 1-4 s), where
    the probe pod is as unprotected as any: the probe would report the namespace open and hold
    its runs although enforcement arrives seconds later. So it waits, as the stage step does,
    for ``clean_rounds`` silent rounds in a row, refusing at ``bound_seconds``; the answers it
    names are those of the last round that had any."""
    from lightbox.sandbox.incheck import run_rounds  # incheck builds on this module

    rounds: list[list[Check]] = []

    def one_round(round_targets: Sequence[Target], timeout: float) -> list[Check]:
        rounds.append(probe(round_targets, timeout))
        return rounds[-1]

    decision = run_rounds(targets, config, probe=one_round)
    if decision.action == "proceed":
        return True, [], rounds
    last = next(([c for c in r if c.answered] for r in reversed(rounds) if any(c.answered for c in r)), [])
    return False, [f"{c.kind} {c.target} ({c.detail})" for c in last] or [decision.message], rounds


def main(argv: list[str] | None = None) -> int:
    defaults = IsolationCheckConfig()
    parser = argparse.ArgumentParser(prog="lightbox probe", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api-server", help="host:port or URL (besides $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)"
    )
    parser.add_argument("--dns", action="append", default=[], help="cluster DNS server host[:port] (repeatable)")
    parser.add_argument("--outside", action="append", default=[], help="an address outside the cluster (repeatable)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per check")
    parser.add_argument("--clean-rounds", type=int, default=defaults.clean_rounds,
                        help=f"consecutive silent rounds needed (default {defaults.clean_rounds})")
    parser.add_argument("--interval", type=float, default=defaults.interval_seconds,
                        help=f"seconds between rounds (default {defaults.interval_seconds:g})")
    parser.add_argument(
        "--bound",
        type=float,
        default=defaults.bound_seconds,
        help=f"not isolated unless the rounds are clean by then, seconds (default {defaults.bound_seconds:g})",
    )
    parser.add_argument("--gpus-allowed", type=int, default=0, help="GPUs this container requested (default 0)")
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help=argparse.SUPPRESS
    )  # a fake /dev, /proc tree in tests
    parser.add_argument("--routes", type=Path, default=ROUTES, help=argparse.SUPPRESS)  # a route table file in tests
    args = parser.parse_args(argv)
    try:
        config = IsolationCheckConfig(timeout_seconds=args.timeout, clean_rounds=args.clean_rounds,
                                      interval_seconds=args.interval, bound_seconds=args.bound)
    except ValidationError as exc:
        options = {"timeout_seconds": "--timeout", "clean_rounds": "--clean-rounds", "interval_seconds": "--interval",
                   "bound_seconds": "--bound"}
        parser.error("; ".join(f"{options.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()))

    # The node comes from $LIGHTBOX_NODE_IP (downward API), the gateways from the route table.
    targets = pod_targets([args.api_server], args.dns, args.outside, os.environ, read_routes(args.routes))
    # GPUs are static (no window to wait out): checked once, before the rounds.
    gpus = gpu_problem(gpu_view(args.root), args.gpus_allowed)
    isolated, answered, rounds = (False, [gpus], []) if gpus else probe_rounds(targets, config)
    checks = rounds[-1] if rounds else []
    result = {"isolated": isolated, "answered": answered, "checked": [t.address for t in targets]}
    text = json.dumps(result, separators=(",", ":"))
    if len(text) > 4000:
        result = {"isolated": isolated, "answered": answered[:5]}
        text = json.dumps(result, separators=(",", ":"))[:4000]
    _write_termination_log(text)
    print(json.dumps({**result, "rounds": len(rounds), "checks": [asdict(c) for c in checks]}))
    return 0 if isolated else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a real node changes on the host, and putting it back.

The kubelet, kube-proxy, kube-router, containerd and the CNI plugins change
shared host state: sysctls, iptables chains and rules, ipsets, a bridge and
veths, network namespaces under /run/netns, mounts, cgroups and an address on
the loopback interface. :func:`snapshot` records what was there before ``up``;
:func:`restore` removes what the node added, whether or not it still runs, and
is idempotent. Parsing and filtering are pure functions, the rest thin shells
over ``iptables-save``/``iptables-restore``, ``ipset``, ``ip`` and ``umount``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lightbox.devtools import node_config as cfg

Log = Callable[[str], None]
NETNS_DIR = Path("/run/netns")
RUN_CONTAINERD = Path("/run/containerd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The kubelet's cgroup for pods (cgroupfs driver, cgroupsPerQOS).
KUBEPODS = "kubepods"


@dataclasses.dataclass(frozen=True)
class HostState:
    """The parts of the host a node touches, as plain data (comparable, JSON-able)."""

    sysctls: dict[str, str]
    chains: dict[str, list[str]]        # "ip4:filter" -> sorted user-defined chain names
    rules: dict[str, list[str]]         # "ip4:filter" -> sorted rules ("-A ..." lines)
    ipsets: list[str]
    links: list[str]                    # the node's kind of links: its bridge, CNI veths, kube-router's
    netns: list[str]                    # CNI network namespaces (cni-*)
    loopback_addrs: list[str]
    # /run/containerd existed (shim sockets, fifos); None: another containerd was running, so whether it
    # exists is that one's doing (the real-node tier checks images in private containerds meanwhile)
    run_containerd: bool | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HostState:
        return cls(**json.loads(text))

    def differences(self, other: HostState) -> list[str]:
        """Human-readable differences (empty when the host is as before)."""
        out: list[str] = []
        for key in sorted(set(self.sysctls) | set(other.sysctls)):
            if self.sysctls.get(key) != other.sysctls.get(key):
                out.append(f"sysctl {key}: {self.sysctls.get(key)} -> {other.sysctls.get(key)}")
        for table in sorted(set(self.chains) | set(other.chains)):
            had, has = set(self.chains.get(table, [])), set(other.chains.get(table, []))
            out += [f"{table} chain added: {c}" for c in sorted(has - had)]
            out += [f"{table} chain removed: {c}" for c in sorted(had - has)]
        for table in sorted(set(self.rules) | set(other.rules)):
            a, b = self.rules.get(table, []), other.rules.get(table, [])
            out += [f"{table} rule added: {r}" for r in b if r not in a]
            out += [f"{table} rule removed: {r}" for r in a if r not in b]
        if None not in (self.run_containerd, other.run_containerd) and self.run_containerd != other.run_containerd:
            out.append(f"/run/containerd {'added' if other.run_containerd else 'removed'}")
        for what, a, b in (("ipset", self.ipsets, other.ipsets), ("link", self.links, other.links),
                           ("netns", self.netns, other.netns), ("lo address", self.loopback_addrs,
                                                                 other.loopback_addrs)):
            out += [f"{what} added: {x}" for x in sorted(set(b) - set(a))]
            out += [f"{what} removed: {x}" for x in sorted(set(a) - set(b))]
        return out


# --------------------------------------------------------------------------- pure parsing


BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


def parse_save_chains(save_text: str) -> dict[str, list[str]]:
    """``iptables-save`` output -> {table: sorted user-defined chain names}.

    Built-in chains are left out: iptables-nft creates a table with them on first use, which
    filters nothing while their policy is ACCEPT (a changed policy shows as a rule difference
    no more than here; the node changes no policy).
    """
    tables: dict[str, list[str]] = {}
    table = None
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            tables.setdefault(table, [])
        elif line.startswith(":") and table is not None:
            name = line[1:].split()[0]
            if name not in BUILTIN_CHAINS:
                tables[table].append(name)
    return {t: sorted(c) for t, c in tables.items() if c}


def parse_save_rules(save_text: str) -> dict[str, list[str]]:
    """``iptables-save`` output -> {table: sorted rule lines}."""
    tables: dict[str, list[str]] = {}
    table = None
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and table is not None:
            tables.setdefault(table, []).append(line.strip())
    return {t: sorted(r) for t, r in tables.items()}


_CNI_VETH = re.compile(r"veth[0-9a-f]{8}")


def is_node_link(name: str) -> bool:
    return name in (cfg.BRIDGE, "kube-bridge", "kube-dummy-if") or bool(_CNI_VETH.fullmatch(name))


_JUMP = re.compile(r"\s-[jg]\s+(\S+)")


def strip_chains(save_text: str, is_ours: Callable[[str], bool]) -> dict[str, str]:
    """Per table that holds chains of ours: the ruleset without them and without rules jumping to them.

    Returns {table: text for ``iptables-restore``} (tables to leave alone are absent).
    """
    out: dict[str, str] = {}
    table: str | None = None
    lines: list[str] = []
    changed = False
    for raw in save_text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table, lines, changed = line[1:], [line], False
            continue
        if table is None:
            continue
        if line == "COMMIT":
            lines.append(line)
            if changed:
                out[table] = "\n".join(lines) + "\n"
            table = None
            continue
        if line.startswith(":"):
            name = line[1:].split()[0]
            if is_ours(name):
                changed = True
                continue
        elif line.startswith("-A "):
            chain = line.split()[1]
            jump = _JUMP.search(line)
            if is_ours(chain) or (jump and is_ours(jump.group(1))):
                changed = True
                continue
        lines.append(line)
    return out


def is_node_chain(name: str, before: Iterable[str] = ()) -> bool:
    return cfg.matches_prefix(name, cfg.CHAIN_PREFIXES) and name not in set(before)


def mounts_under(mountinfo: str, roots: Sequence[Path]) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (the order to unmount them)."""
    points: list[str] = []
    prefixes = [str(r).rstrip("/") for r in roots]
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


# --------------------------------------------------------------------------- reading the host


def _run(cmd: Sequence[str], *, check: bool = False, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, input=input, timeout=timeout)


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


def _save(family: str) -> str:
    tool = "iptables-save" if family == "ip4" else "ip6tables-save"
    if not _have(tool):
        return ""
    return _run([tool]).stdout


def _links() -> list[str]:
    if not _have("ip"):
        return []
    out = _run(["ip", "-j", "link", "show"]).stdout or "[]"
    return sorted(link["ifname"] for link in json.loads(out))


def _loopback_addrs() -> list[str]:
    if not _have("ip"):
        return []
    out = _run(["ip", "-j", "-4", "addr", "show", "dev", "lo"]).stdout or "[]"
    return sorted(f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link.get("addr_info", []))


def _ipsets() -> list[str]:
    if not _have("ipset"):
        return []
    return sorted(n for n in _run(["ipset", "list", "-n"]).stdout.split() if n)


def _netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def snapshot() -> HostState:
    """The host as far as a node touches it (other tools' links and namespaces are not the node's)."""
    chains: dict[str, list[str]] = {}
    rules: dict[str, list[str]] = {}
    for family in ("ip4", "ip6"):
        text = _save(family)
        chains.update({f"{family}:{t}": names for t, names in parse_save_chains(text).items()})
        rules.update({f"{family}:{t}": lines for t, lines in parse_save_rules(text).items()})
    return HostState(
        sysctls={k: v for k in cfg.TOUCHED_SYSCTLS if (v := read_sysctl(k)) is not None},
        chains=chains,
        rules=rules,
        ipsets=_ipsets(),
        links=[n for n in _links() if is_node_link(n)],
        netns=[n for n in _netns() if n.startswith("cni-")],
        loopback_addrs=_loopback_addrs(),
        # Another containerd's sockets are not the node's doing.
        run_containerd=None if _other_containerd_running() else RUN_CONTAINERD.exists(),
    )


# --------------------------------------------------------------------------- putting it back


def kill_cgroup_processes(name: str = KUBEPODS) -> int:
    """SIGKILL every process in the pods' cgroups (every container process is in one). Returns how many."""
    pids: set[int] = set()
    for procs in CGROUP_ROOT.glob(f"*/{name}/**/cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(x) for x in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_cgroups(name: str = KUBEPODS) -> None:
    """rmdir the pods' cgroup trees, deepest first (an empty cgroup dir is removed by rmdir, not rm)."""
    for ctrl in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
        top = ctrl / name
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def kill_processes_mentioning(needle: str) -> list[int]:
    """SIGKILL processes whose command line contains ``needle`` (containerd shims name our socket)."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


def _other_containerd_running() -> bool:
    """Another containerd (or a shim of one) keeps its sockets under /run/containerd."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip().startswith("containerd"):
                return True
    return False


def unmount_all(roots: Sequence[Path]) -> list[str]:
    """Unmount everything at or below ``roots`` (lazily when busy). Returns the mount points left."""
    for _ in range(3):
        points = mounts_under(Path("/proc/self/mountinfo").read_text(), roots)
        if not points:
            return []
        for point in points:
            if _run(["umount", point]).returncode != 0:
                _run(["umount", "-l", point])
    return mounts_under(Path("/proc/self/mountinfo").read_text(), roots)


def remove_netns(before: Iterable[str]) -> None:
    keep = set(before)
    for name in _netns():
        if name in keep or not name.startswith("cni-"):
            continue
        path = NETNS_DIR / name
        _run(["umount", str(path)])
        with contextlib.suppress(OSError):
            path.unlink()


def remove_chains(is_ours: Callable[[str], bool]) -> None:
    """Remove the chains ``is_ours`` names, and every rule jumping to them, from iptables and ip6tables."""
    for family in ("ip4", "ip6"):
        restore = "iptables-restore" if family == "ip4" else "ip6tables-restore"
        if not _have(restore):
            continue
        for table, ruleset in strip_chains(_save(family), is_ours).items():
            result = _run([restore, "-w"], input=ruleset)
            if result.returncode != 0:
                raise RuntimeError(f"{restore} of table {table} failed: {result.stderr.strip()}")


def is_kube_router_chain(name: str) -> bool:
    return name.startswith(("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-", "KUBE-SRC-", "KUBE-DST-"))


def remove_kube_router_state() -> None:
    """What kube-router leaves when stopped: its chains (still enforcing) and ipsets.

    ``kube-router --cleanup-config`` would do this but panics without IPVS in this kernel.
    """
    remove_chains(is_kube_router_chain)
    remove_ipsets(None)


def remove_iptables(before: HostState | None) -> None:
    for family in ("ip4", "ip6"):
        restore = "iptables-restore" if family == "ip4" else "ip6tables-restore"
        if not _have(restore):
            continue
        text = _save(family)
        before_names = {c for t, names in (before.chains if before else {}).items() if t.startswith(family)
                        for c in names}
        for table, ruleset in strip_chains(text, functools.partial(is_node_chain, before=before_names)).items():
            result = _run([restore, "-w"], input=ruleset)
            if result.returncode != 0:
                raise RuntimeError(f"{restore} of table {table} failed: {result.stderr.strip()}")


def remove_ipsets(before: HostState | None) -> None:
    keep = set(before.ipsets if before else [])
    for _ in range(3):  # a list:set must go before the sets it names
        ours = [n for n in _ipsets() if n not in keep and cfg.matches_prefix(n, cfg.IPSET_PREFIXES)]
        if not ours:
            return
        for name in ours:
            _run(["ipset", "destroy", name])


def remove_links(before: HostState | None) -> None:
    keep = set(before.links if before else [])
    if not _have("ip"):
        return
    links = json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")
    for link in links:
        name = link["ifname"]
        if name in keep:
            continue
        if name == cfg.BRIDGE or link.get("master") == cfg.BRIDGE or name in ("kube-bridge", "kube-dummy-if"):
            _run(["ip", "link", "delete", name])


def remove_loopback_addr(before: HostState | None, addr: str = f"{cfg.NODE_IP}/32") -> None:
    if before is not None and addr in before.loopback_addrs:
        return
    if addr in _loopback_addrs():
        _run(["ip", "addr", "del", addr, "dev", "lo"])


def restore_sysctls(before: HostState | None, log: Log) -> None:
    if before is None:
        log("no record of the host's sysctls before the node started; leaving "
            f"{', '.join(cfg.TOUCHED_SYSCTLS)} as they are")
        return
    for name, value in before.sysctls.items():
        if read_sysctl(name) != value:
            try:
                write_sysctl(name, value)
            except OSError as exc:
                log(f"could not restore {name}={value}: {exc}")


def restore(before: HostState | None, *, owned_dirs: Sequence[Path], shim_needle: str, log: Log) -> list[str]:
    """Undo the node's changes to the host. Returns what still differs from ``before`` (empty when clean)."""
    kill_processes_mentioning(shim_needle)
    for _ in range(20):
        if kill_cgroup_processes() == 0:
            break
        time.sleep(0.1)
    remove_netns(before.netns if before else ())
    unmount_all(owned_dirs)
    remove_iptables(before)
    remove_ipsets(before)
    remove_links(before)
    remove_loopback_addr(before)
    if before is not None and before.run_containerd is False and not _other_containerd_running():
        shutil.rmtree(RUN_CONTAINERD, ignore_errors=True)
    restore_sysctls(before, log)
    remove_cgroups()
    if before is None:
        return []
    return before.differences(snapshot())

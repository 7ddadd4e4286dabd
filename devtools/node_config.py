"""The real node's configuration, rendered by pure functions (no I/O here).

One node per machine, named ``lightbox-node``:

- containerd with its own root, state, socket and CNI conf dir; cgroupfs;
  ``restrict_oom_score_adj`` because root here lacks CAP_SYS_RESOURCE;
  the pause image we build as ``sandbox_image``.
- a bridge CNI network on ``POD_CIDR``. No IP masquerade and a FORWARD rule
  that drops pod traffic leaving the pod network: pods may reach this machine
  and each other, never another host.
- the node's address ``NODE_IP`` lives on the loopback interface: it is an
  address of this machine that pods reach through their gateway, and the API
  server binds and advertises it (the `kubernetes` Service's endpoint cannot be
  127.0.0.1).
- kubelet serving TLS on ``NODE_IP`` with a certificate from the control plane's
  CA, so the API server reaches it (``kubectl logs``); it authenticates clients
  by that CA and authorizes them by SubjectAccessReview.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml

NODE_NAME = "lightbox-node"
NODE_IP = "10.77.0.1"
POD_CIDR = "10.88.0.0/16"
BRIDGE = "lbx0"
CNI_NETWORK = "lightbox"
PAUSE_IMAGE = "localhost/lightbox/pause:1"
KUBELET_PORT = 10250

#: Sysctls the kubelet, the bridge plugin or kube-proxy may change; `down` puts them back.
TOUCHED_SYSCTLS: tuple[str, ...] = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)

#: Chain-name prefixes created by kubelet, kube-proxy, kube-router, the CNI plugins and us.
CHAIN_PREFIXES: tuple[str, ...] = ("KUBE-", "CNI-", "LIGHTBOX-")
#: The chain holding our own pod-egress rule.
EGRESS_CHAIN = "LIGHTBOX-NODE-EGRESS"
#: ipset names created by kube-router's firewall.
IPSET_PREFIXES: tuple[str, ...] = ("KUBE-", "kube-router-", "inet6:KUBE-", "inet6:kube-router-")


@dataclasses.dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its files. ``workdir`` is per run; ``containerd_root`` persists imported images."""

    workdir: Path
    containerd_root: Path

    @property
    def containerd_state(self) -> Path: return self.workdir / "containerd-state"
    @property
    def containerd_socket(self) -> Path: return self.workdir / "containerd.sock"
    @property
    def containerd_config(self) -> Path: return self.workdir / "containerd.toml"
    @property
    def cni_conf_dir(self) -> Path: return self.workdir / "cni" / "net.d"
    @property
    def kubelet_root(self) -> Path: return self.workdir / "kubelet"
    @property
    def kubelet_config(self) -> Path: return self.workdir / "kubelet.yaml"
    @property
    def kubelet_kubeconfig(self) -> Path: return self.workdir / "kubelet.kubeconfig"
    @property
    def kube_proxy_config(self) -> Path: return self.workdir / "kube-proxy.yaml"
    @property
    def pod_logs(self) -> Path: return self.workdir / "pod-logs"
    @property
    def pki(self) -> Path: return self.workdir / "pki"
    @property
    def logs(self) -> Path: return self.workdir / "logs"
    @property
    def state_file(self) -> Path: return self.workdir / "node-state.json"
    @property
    def host_snapshot(self) -> Path: return self.workdir / "host-before.json"

    def owned_dirs(self) -> tuple[Path, ...]:
        """Directories under which every mount is ours to unmount on teardown."""
        return (self.workdir, self.containerd_root)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for these values


def render_containerd_config(paths: NodePaths, *, pause_image: str = PAUSE_IMAGE,
                             cni_bin_dir: str = "/usr/lib/cni") -> str:
    """containerd 1.6 (config version 2) for the CRI, isolated from any system containerd."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f"root = {_toml_str(str(paths.containerd_root))}",
        f"state = {_toml_str(str(paths.containerd_state))}",
        # Not a system service: nothing else may manage our containers.
        'disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",'
        ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
        ' "io.containerd.snapshotter.v1.devmapper"]',
        "",
        "[grpc]",
        f"  address = {_toml_str(str(paths.containerd_socket))}",
        "",
        "[ttrpc]",
        f"  address = {_toml_str(str(paths.containerd_socket) + '.ttrpc')}",
        "",
        "[debug]",
        '  level = "warn"',
        "",
        f"[{cri}]",
        f"  sandbox_image = {_toml_str(pause_image)}",
        # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below ours.
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        "  disable_apparmor = true",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        f"  bin_dir = {_toml_str(cni_bin_dir)}",
        f"  conf_dir = {_toml_str(str(paths.cni_conf_dir))}",
        "  max_conf_num = 1",
        "",
    ]
    return "\n".join(lines)


def render_cni_conflist(*, ipam_dir: Path, pod_cidr: str = POD_CIDR, bridge: str = BRIDGE) -> str:
    """A bridge network without masquerade: pod traffic never leaves this machine with its address.

    ``ipam_dir`` keeps the address allocations with the node's files, not in /var/lib/cni.
    """
    net = ipaddress.ip_network(pod_cidr)
    gateway = str(next(net.hosts()))
    doc = {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(net), "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def render_kubelet_config(paths: NodePaths, *, ca_file: Path, tls_cert: Path, tls_key: Path, port: int,
                          healthz_port: int, node_ip: str = NODE_IP) -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        # This kernel has cgroup v1 only; kubelet 1.31+ refuses it unless told.
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(paths.pod_logs),
        # Pods get no resolver: there is no cluster DNS, and the host's resolver
        # is an address outside this machine.
        "resolvConf": "",
        "failSwapOn": False,
        "serializeImagePulls": False,
        # Images are imported, never pulled: the kubelet must not delete them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A busy shared disk must not make the only node evict the test's pods.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "maxPods": 64,
        "enableServer": True,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def render_kube_proxy_config(*, kubeconfig: Path, healthz_port: int, metrics_port: int,
                             pod_cidr: str = POD_CIDR, node_ip: str = NODE_IP) -> str:
    """iptables mode; every sysctl-writing option off (conntrack sizes, localhost node ports)."""
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": node_ip,
        "clusterCIDR": pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{node_ip}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_router_args(*, kubeconfig: Path, service_cidr: str) -> list[str]:
    """Firewall only: NetworkPolicy enforcement, no routing, no service proxy, no CNI."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        "--enable-ipv6=false",
        f"--service-cluster-ip-range={service_cidr}",
        "--health-port=0",
        "--metrics-port=0",
        # A full resync every few seconds bounds how long a pod can stay unprotected when an
        # event-driven sync misses it (seen here: run pods unprotected for 30 s with 5m).
        "--iptables-sync-period=5s",
        "--v=1",
    ]


def controller_manager_args(*, service_cidr: str, pod_cidr: str = POD_CIDR) -> list[str]:
    """The node's podCIDR comes from the node-ipam controller (kube-router reads it)."""
    prefix = ipaddress.ip_network(pod_cidr).prefixlen
    return [
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={pod_cidr}",
        f"--node-cidr-mask-size={prefix}",
        f"--service-cluster-ip-range={service_cidr}",
    ]


#: Controllers a real node needs on top of the control plane's defaults: the
#: node gets its podCIDR and loses its not-ready taint, Services get endpoints,
#: pods of a deleted node are collected.
NODE_CONTROLLERS: tuple[str, ...] = (
    "node-ipam-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "pod-garbage-collector-controller",
)


def apiserver_args(*, kubelet_client_cert: Path, kubelet_client_key: Path, ca_file: Path) -> list[str]:
    """The API server reaches the kubelet over TLS (logs, exec) and knows the node's identity."""
    return [
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={kubelet_client_cert}",
        f"--kubelet-client-key={kubelet_client_key}",
        f"--kubelet-certificate-authority={ca_file}",
        "--kubelet-preferred-address-types=InternalIP",
        # The `kubernetes` Service gets this apiserver's address as endpoint,
        # so in-cluster clients (the operator pod) reach it.
        "--endpoint-reconciler-type=lease",
    ]


def forward_rules(pod_cidr: str = POD_CIDR, chain: str = EGRESS_CHAIN) -> list[list[str]]:
    """iptables argument lists: pods may not send to any address outside the pod network through us.

    Pod-to-host traffic is delivered locally (INPUT), pod-to-pod traffic stays in the pod
    network; anything else would be forwarded to another machine. The rule lives in the mangle
    table's FORWARD chain, which the kernel walks before the filter table's, where kube-router
    ACCEPTs the traffic of pods no NetworkPolicy selects.
    """
    return [
        ["-t", "mangle", "-N", chain],
        ["-t", "mangle", "-A", chain, "-s", pod_cidr, "!", "-d", pod_cidr, "-j", "DROP"],
        ["-t", "mangle", "-I", "FORWARD", "1", "-j", chain],
    ]


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


# --------------------------------------------------------------------------- readiness, read from iptables-save


def _rules(table_dump: str) -> list[list[str]]:
    """The ``-A CHAIN ...`` lines of an ``iptables-save`` dump, split as the shell would (comments are quoted)."""
    out = []
    for line in table_dump.splitlines():
        if line.startswith("-A "):
            try:
                out.append(shlex.split(line))
            except ValueError:   # an unbalanced quote: not a rule we read
                continue
    return out


def _option(rule: list[str], name: str) -> str | None:
    return rule[rule.index(name) + 1] if name in rule[:-1] else None


def service_programmed(nat_dump: str, *, cluster_ip: str, port: int, endpoint: str) -> bool:
    """Whether kube-proxy's rules in ``iptables-save -t nat`` send ``cluster_ip:port`` on to ``endpoint``.

    kube-proxy's /healthz answers 200 before its first sync (it counts as healthy "while starting
    up"), so a pod started then finds no route to the API server through its Service. This follows
    the chain a packet takes: KUBE-SERVICES -> the service's KUBE-SVC chain -> a KUBE-SEP chain that
    DNATs to the endpoint.
    """
    rules = _rules(nat_dump)
    services = {_option(r, "-j") for r in rules if r[1] == "KUBE-SERVICES" and _option(r, "-d") == f"{cluster_ip}/32"
                and _option(r, "--dport") == str(port)}
    endpoints = {_option(r, "-j") for r in rules if r[1] in services}
    return any(r[1] in endpoints and _option(r, "-j") == "DNAT" and _option(r, "--to-destination") == endpoint
               for r in rules)


#: kube-router's top-level filter chains; a full policy sync ends each with the explicit ACCEPT below.
KUBE_ROUTER_CHAINS = ("KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT")
_POLICY_ACCEPT_MARK = "0x20000/0x20000"


def policy_sync_done(filter_dump: str) -> bool:
    """Whether kube-router finished a full NetworkPolicy sync, read from ``iptables-save -t filter``.

    Its chains appear before the first sync (it creates them on start, then syncs in another
    goroutine); only the full sync's iptables-restore appends the rule that ACCEPTs traffic marked as
    complying with the policies, to every top-level chain at once.
    """
    done = {r[1] for r in _rules(filter_dump) if r[1] in KUBE_ROUTER_CHAINS
            and _option(r, "--mark") == _POLICY_ACCEPT_MARK and _option(r, "-j") == "ACCEPT"}
    return done == set(KUBE_ROUTER_CHAINS)

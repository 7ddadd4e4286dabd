"""NetworkPolicy on the real node: deny-all enforced by kube-router, and the in-pod isolation check both ways.

Every target is on this machine: the API server (through the `kubernetes` Service and on the node
address), and listeners this test opens on the node address and on the pod network's gateway.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import yaml
from operator_harness import apply, finished, get, runs_of, validation, wait_for

from lightbox.api.run import VENDOR_CONTAINER
from lightbox.devtools import node_config as cfg

GATEWAY = "10.88.0.1"
#: kube-router protects a new pod 1-4 s after it gets its address; the probe pod waits past that.
SETTLE_SECONDS = 10

PROBE = """
import json, socket, sys, time
time.sleep(%(settle)d)
out = {}
for name, host, port in %(targets)r:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


@contextlib.contextmanager
def listeners(*addresses: str):
    """TCP listeners on this machine's addresses; yields {address: port}."""
    socks, ports = [], {}
    stop = threading.Event()
    for addr in addresses:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 0))
        s.listen(16)
        s.settimeout(0.2)
        socks.append(s)
        ports[addr] = s.getsockname()[1]

    def serve(s):
        while not stop.is_set():
            try:
                conn, _ = s.accept()
                conn.close()
            except OSError:
                continue

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    try:
        yield ports
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=2)
        for s in socks:
            s.close()


def _probe_pod(name: str, image: str, targets: list[tuple[str, str, int]]) -> dict:
    script = PROBE % {"settle": SETTLE_SECONDS, "targets": targets}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def _start_probe(kubectl, ns: str, name: str, image: str, targets) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(_probe_pod(name, image, targets)), check=True)


def _probe_result(kubectl, ns: str, name: str) -> dict[str, str]:
    deadline = time.monotonic() + 180
    while True:
        phase = kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed"):
            break
        assert time.monotonic() < deadline, f"probe pod {ns}/{name} still {phase!r}"
        time.sleep(1)
    logs = kubectl("logs", "-n", ns, name, check=True).stdout
    return json.loads(logs.strip().splitlines()[-1])


def _apiserver_port(cluster) -> int:
    return int(cluster.node.control_plane.url.rsplit(":", 1)[1])


def test_deny_all_policy_cuts_a_pod_off_from_api_server_node_and_gateway(cluster, run_ns, chest, algo, kubectl):
    image = cluster.image("lightbox")
    with listeners(cfg.NODE_IP, GATEWAY) as ports:
        targets = [
            ("api-server-service", "10.0.0.1", 443),
            ("api-server-node", cfg.NODE_IP, _apiserver_port(cluster)),
            ("node-listener", cfg.NODE_IP, ports[cfg.NODE_IP]),
            ("gateway-listener", GATEWAY, ports[GATEWAY]),
        ]
        deny_all = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "deny-all"},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
        apply(kubectl, run_ns, deny_all)
        # Control, at the same time: without a policy every target answers, so silence in the
        # other namespace is the policy's doing.
        kubectl("create", "namespace", f"{run_ns}-open", check=True)
        try:
            _start_probe(kubectl, f"{run_ns}-open", "probe", image, targets)
            _start_probe(kubectl, run_ns, "probe", image, targets)
            open_result = _probe_result(kubectl, f"{run_ns}-open", "probe")
            closed = _probe_result(kubectl, run_ns, "probe")
        finally:
            kubectl("delete", "namespace", f"{run_ns}-open", "--wait=false")
    assert open_result == {name: "connected" for name, _, _ in targets}, open_result
    assert all(v != "connected" for v in closed.values()), closed


def test_in_pod_isolation_check_refuses_a_run_when_the_policy_engine_is_off(
    cluster, run_ns, chest, algo, kubectl, api_client
):
    """With enforcement off the stage step must refuse (IsolationNotEnforced) and the vendor never start;
    without the check this run would succeed. The namespace probe is off so only the in-pod check decides."""
    ns = run_ns
    kubectl("patch", "sandboxpolicy", f"rn-{ns}", "--type=merge", "-p",
            json.dumps({"spec": {"isolationProbe": {"required": False}}}), check=True)
    apply(kubectl, ns, chest, algo("classifier", cluster.image("classifier"), gpus=0))
    wait_for(lambda: get(api_client, "datasets", ns, "chest"),
             lambda d: ((d or {}).get("status") or {}).get("verified") is True, 300, "the dataset's verification")

    with cluster.node.policy_engine_stopped():
        apply(kubectl, ns, validation("unprotected", "classifier"))
        result = wait_for(lambda: get(api_client, "validations", ns, "unprotected"), finished, 600,
                          "the run without enforcement")
    (run,) = runs_of(result)
    assert (run["phase"], run["reason"]) == ("Failed", "IsolationNotEnforced"), run
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "job-name=unprotected-r1", "-o", "json",
                              check=True).stdout)["items"]
    for pod in pods:
        vendor = {s["name"]: s for s in pod["status"].get("initContainerStatuses") or []}[VENDOR_CONTAINER]
        assert "running" not in vendor["state"] and "terminated" not in vendor["state"], vendor
        assert not vendor.get("lastState"), vendor

    # Enforcement back: the same run proceeds.
    apply(kubectl, ns, validation("protected", "classifier"))
    result = wait_for(lambda: get(api_client, "validations", ns, "protected"), finished, 600,
                      "the run with enforcement")
    (run,) = runs_of(result)
    assert run["phase"] == "Succeeded", run

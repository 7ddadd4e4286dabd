"""Real-node tier: control plane + one real node (containerd, kubelet, kube-scheduler, kube-proxy,
kube-router) + the operator installed in-cluster by ``helm install`` of charts/lightbox, once per session.

Nothing is mocked: the vendor runs in its own container from its own image, the kernel's cgroup
limits stop it, kube-router enforces the NetworkPolicy.

Selection: collected when ``LIGHTBOX_REALNODE=1`` (``make realnode``) or when tests/realnode is named on
the command line. With ``CI=true`` a machine that cannot run the node FAILS the tier; elsewhere it is
skipped with a line naming what is missing (not root, not Linux, no apt-get for the packages).

Fixtures:
    cluster     session   Cluster(node, kubeconfig, images {name: BuiltImage}, data_dir)
    kubectl     session   kubectl(*args, input=None, timeout=120) -> CompletedProcess[str]
    api_client  session   kubernetes ApiClient (admin)
    run_ns      function  a namespace enforcing PodSecurity restricted, its own SandboxPolicy (allowing
                          localhost images), a PV/PVC ``lightbox-data`` holding the sample dataset
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent
IMAGES = ("lightbox", "classifier", "misbehave")


def _selected(config) -> bool:
    if os.environ.get("LIGHTBOX_REALNODE") == "1":
        return True
    return any("realnode" in str(a) for a in config.args)


def pytest_ignore_collect(collection_path, config):
    if collection_path.parent == HERE and collection_path.name.startswith("test_") and not _selected(config):
        return True
    return None


#: With pytest-xdist (``make realnode`` runs ``-n 2``) the tier runs as two groups at once, one process
#: each: the tests on the node (the modules test_realnode_*.py; that process starts the one node a
#: machine can hold) and the tests of images in private containerds (one cached root, one user at a
#: time). Mostly both wait (pods, containers, kube-router's window), so the tier takes about as long
#: as its longer half. Within a group the order is the file order.
NODE_GROUP, IMAGES_GROUP = "node", "images"


def group_of(nodeid: str) -> str:
    return NODE_GROUP if Path(nodeid.split("::", 1)[0]).name.startswith("test_realnode_") else IMAGES_GROUP


def pytest_xdist_make_scheduler(config, log):
    """Each group's tests to one worker (xdist's own ``--dist loadgroup`` tags node ids in a way pytest 9 ignores)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realnode)
            # a test on the node in the other process would start a second node there: refused at collection
            if "cluster" in getattr(item, "fixturenames", ()) and group_of(item.nodeid) != NODE_GROUP:
                raise pytest.UsageError(f"{item.nodeid} uses the node: only test_realnode_*.py modules may")


def pytest_configure(config):
    config.addinivalue_line("markers", "realnode: needs the real node started by tests/realnode/conftest.py")


def _terminal_log(request):
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def log(message: str) -> None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                print(f"\n[lightbox] {message}", file=sys.stderr, flush=True)
        else:
            print(f"[lightbox] {message}", file=sys.stderr, flush=True)

    return log


@dataclasses.dataclass
class Cluster:
    node: Any
    kubeconfig: Path
    images: dict[str, Any]
    data_dir: Path
    timings: dict[str, float]
    base: Path
    chart_values: dict[str, Any]

    def image(self, name: str) -> str:
        """``repository@digest`` of a built image (what a vendor puts in spec.image)."""
        img = self.images[name]
        return f"{img.ref.rpartition(':')[0]}@{img.digest}"


def _require_real_node() -> None:
    """Skip with the reason (fail with CI=true) when this machine cannot run the tier."""
    from lightbox.devtools import node as node_mod

    reason = node_mod.unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real-node tier cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"real-node tier skipped: {reason}")


@pytest.fixture(scope="session")
def built_images(request) -> dict[str, Any]:
    """{name: BuiltImage} of IMAGES, built once per session: every test then checks the same image.

    Built again per test module, the application layer (the wheel of this checkout) followed
    whatever the checkout held at that moment, and each rebuild cost minutes."""
    _require_real_node()
    from lightbox.devtools import images as lbimages
    from lightbox.devtools.node_packages import ensure_packages

    log = _terminal_log(request)
    t0 = time.monotonic()
    ensure_packages(log)   # containerd, runc, mmdebstrap and umoci for the images, before the node's own check
    built = lbimages.build(list(IMAGES), log=log)
    log(f"images ready in {time.monotonic() - t0:.0f}s")
    return built


@pytest.fixture(scope="session")
def cluster(request, built_images):
    from lightbox.devtools import node as node_mod
    from lightbox.devtools import node_chart, node_host

    log = _terminal_log(request)
    timings: dict[str, float] = {}
    built = built_images

    # Not under pytest's basetemp: every new pytest session on the machine deletes all but the
    # last three, and other sessions start all the time here; the node's record of the host
    # (and the mounted data) must outlive them.
    base = Path(tempfile.mkdtemp(prefix="lightbox-realnode-", dir=os.environ.get("LIGHTBOX_REALNODE_TMP", "/var/tmp")))
    base.chmod(0o755)
    data_dir = base / "data"
    from operator_harness import make_claim
    make_claim(data_dir)
    data_dir.chmod(0o755)

    workdir = base / "node"
    before = node_host.snapshot()
    node = node_mod.Node(workdir, log=log)
    t0 = time.monotonic()
    try:
        node.start()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"could not start the real node in {workdir}:\n{exc}", pytrace=False)
    timings["node_up"] = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        socket = node.paths.containerd_socket
        node_chart.import_images(socket, {"lightbox": built["lightbox"]}, log)
        # Runs go to each test's own namespace; the operator asks for no CPU so two runs fit the 2 cores.
        values = node_chart.chart_values(built["lightbox"], runs_cluster_wide=True, operator_cpu_request="0")
        # the vendors' images are first needed by the tests: imported while helm waits for the operator pod
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            vendors = pool.submit(node_chart.import_images, socket,
                                  {k: v for k, v in built.items() if k != "lightbox"}, log)
            node_chart.helm_install(node.kubeconfig, values, workdir=workdir, log=log)
            vendors.result()
        timings["chart"] = time.monotonic() - t0
        log(f"real node ready: node {timings['node_up']:.0f}s, chart {timings['chart']:.0f}s")
    except BaseException:
        node.stop()
        raise
    yield Cluster(node, node.kubeconfig, built, data_dir, timings, base, values)

    first = node.stop()
    second = node.stop()   # `down` twice: idempotent
    after = node_host.snapshot()
    problems = before.differences(after)
    assert first == [] and second == [] and problems == [], (
        f"the host is not as before the node started: {problems or first or second} (logs kept in {base})")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def kubectl(cluster):
    def run(*args: str, input: str | None = None, check: bool = False, timeout: float = 120):
        result = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    return run


@pytest.fixture(scope="session")
def api_client(cluster):
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(str(cluster.kubeconfig))
    yield api
    api.close()


def _ns_name(request) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    base = re.sub(r"^test-", "", base)[:36].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:5]}"


def sandbox_policy(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "SandboxPolicy",
        "metadata": {"name": name},
        "spec": {
            "allowedRegistries": ["localhost"],
            "namespaces": [namespace],
            "maxGpusPerRun": 1,
            "maxConcurrentRuns": 4,
            # Required: the namespace probe waits out kube-router's 1-4 s window for its own pod
            # (the in-pod check's rounds), so every run here also shows the probe passing.
            "isolationProbe": {"required": True, "intervalSeconds": 3600},
            **spec,
        },
    }


def data_volume(name: str, namespace: str, claim: str, path: Path) -> list[dict[str, Any]]:
    """A hostPath PV pre-bound to the namespace's claim (PodSecurity restricted admits PVCs, not hostPath)."""
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": namespace, "name": claim},
                 "hostPath": {"path": str(path), "type": "Directory"}},
    }
    pvc = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    }
    return [pv, pvc]


#: Studies and ground truth on one claim (operator_harness.CLAIM), subPaths chest/studies and
#: chest/truth: the run pod gets one volume mounted twice by subPath, which the kubelet mounts
#: (two volumes of one claim it never would). examples/ keeps them on two claims.
CLAIMS = {"data": "lightbox-data"}


@pytest.fixture
def chest() -> dict[str, Any]:
    """The sample Dataset (24 cases): studies and truth on the namespace's one claim."""
    from operator_harness import dataset

    doc = dataset()
    assert doc["spec"]["studies"]["claimName"] == doc["spec"]["groundTruth"]["claimName"] == CLAIMS["data"]
    return doc


#: CPU a test vendor requests: the node has 2 cores, and the GPU test needs 3 pods placed by GPUs, not CPU.
VENDOR_CPU = "250m"


@pytest.fixture
def algo():
    """algorithm(...) of operator_harness with a small CPU request, sized to this 2-core node."""
    from operator_harness import algorithm

    def make(name: str, image_ref: str, **kw: Any) -> dict[str, Any]:
        doc = algorithm(name, image_ref, **kw)
        doc["spec"]["resources"]["cpu"] = VENDOR_CPU
        return doc

    return make


@pytest.fixture
def run_ns(request, cluster, kubectl):
    ns = _ns_name(request)
    labels = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest", "lightbox.test/realnode": "true"}
    kubectl("create", "namespace", ns, check=True)
    kubectl("label", "namespace", ns, *[f"{k}={v}" for k, v in labels.items()], check=True)
    docs = [sandbox_policy(f"rn-{ns}", ns)]
    for part, claim in CLAIMS.items():
        docs += data_volume(f"rn-{ns}-{part}", ns, claim, cluster.data_dir)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=True)
    deadline = time.monotonic() + 30
    while kubectl("get", "serviceaccount", "default", "-n", ns).returncode != 0:
        assert time.monotonic() < deadline, f"namespace {ns} got no default ServiceAccount"
        time.sleep(0.2)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false")
    kubectl("delete", "sandboxpolicy", f"rn-{ns}", "--ignore-not-found")
    for part in CLAIMS:
        kubectl("delete", "pv", f"rn-{ns}-{part}", "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="session")
def variant(cluster, tmp_path_factory):
    """variant(base, tag, cmd) -> repository@digest: a built image with another CMD, imported into the node.

    The misbehaving reference image picks its mode from CMD; a vendor's image cannot be given
    arguments through the Algorithm, so each mode is its own image (a config-only change, by umoci).
    """
    import json as _json
    import tarfile

    from lightbox.devtools import node_pause

    made: dict[tuple[str, str], str] = {}

    def make(base: str, tag: str, cmd: list[str]) -> str:
        if (base, tag) in made:
            return made[(base, tag)]
        img = cluster.images[base]
        repo, _, base_tag = img.ref.rpartition(":")
        work = Path(tempfile.mkdtemp(prefix=f"variant-{base}-{tag}-", dir=cluster.base))
        layout = work / "layout"
        layout.mkdir()
        with tarfile.open(img.archive) as tf:
            tf.extractall(layout, filter="tar")
        subprocess.run(["umoci", "config", "--image", f"{layout}:{base_tag}", "--tag", tag,
                        *[a for c in cmd for a in ("--config.cmd", c)]], check=True, capture_output=True)
        index = _json.loads((layout / "index.json").read_text())
        (manifest,) = [m for m in index["manifests"]
                       if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        # umoci copies the base's annotations, whose image name would retag the base on import.
        manifest["annotations"] = {"org.opencontainers.image.ref.name": tag,
                                   "io.containerd.image.name": f"{repo}:{tag}"}
        index["manifests"] = [manifest]
        (layout / "index.json").write_text(_json.dumps(index))
        digest = manifest["digest"]
        archive = work / "variant.tar"
        subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
        node_pause.import_archive(cluster.node.paths.containerd_socket, archive, f"{repo}:{tag}", digest=digest,
                                  log=lambda m: None)
        made[(base, tag)] = f"{repo}@{digest}"
        return made[(base, tag)]

    return make

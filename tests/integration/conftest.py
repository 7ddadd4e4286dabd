"""Integration tier: one real control plane (etcd + kube-apiserver + kube-controller-manager) per session.

Nothing here is mocked. If the control plane cannot be started (no Go to build
the binaries, a build failure, a component that does not come up) every test
that needs it FAILS with the reason; the tier is never skipped.

Fixtures:
    control_plane  session   lightbox.devtools.controlplane.ControlPlane (started; CRDs in crds/ applied)
    kubeconfig     session   Path of its kubeconfig (admin, group system:masters)
    api_client     session   kubernetes.client.ApiClient for that kubeconfig
    namespace      function  a fresh namespace enforcing PodSecurity "restricted" (deleted afterwards)
    kubectl        session   kubectl(*args, input=None, check=False, timeout=120) -> CompletedProcess[str]
    claim          function  a claim folder of its own holding the 60-case sample dataset under chest/
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"

RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ carries the `integration` marker (``-m "not integration"`` works)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _terminal_log(request):
    """Log past pytest's output capture: a cold build runs for minutes and should say so."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def log(message: str) -> None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                print(f"\n[lightbox] {message}", file=sys.stderr, flush=True)
        else:
            print(f"[lightbox] {message}", file=sys.stderr, flush=True)

    return log


def crd_files() -> list[Path]:
    return sorted(p for p in CRDS_DIR.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def apply_crds(api_client, files: list[Path], timeout: float = 60.0) -> list[str]:
    """Create or replace every CustomResourceDefinition in ``files``; wait until all are Established."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    names: list[str] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise RuntimeError(f"{path}: expected CustomResourceDefinition documents, found {doc.get('kind')!r}")
            name = doc["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise RuntimeError(f"{path}: the API server rejected CRD {name}: {exc.status} {exc.body}") from exc
                current = ext.read_custom_resource_definition(name)
                doc.setdefault("metadata", {})["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, doc)
            names.append(name)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in list(pending):
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c for c in (crd.status.conditions or [])} if crd.status else {}
            if "Established" in conds and conds["Established"].status == "True":
                pending.discard(name)
            elif "NamesAccepted" in conds and conds["NamesAccepted"].status == "False":
                raise RuntimeError(f"CRD {name}: names not accepted: {conds['NamesAccepted'].message}")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"CRDs not Established within {timeout:.0f}s: {sorted(pending)}")
        if pending:
            time.sleep(0.1)
    _wait_for_openapi(api_client, [yaml.safe_load(p.read_text()) for p in files], deadline)
    return names


def _wait_for_openapi(api_client, crds: list[dict], deadline: float) -> None:
    """`kubectl explain` reads the OpenAPI v3 document, published a moment after Established."""
    from kubernetes.client.rest import ApiException

    wanted: dict[str, set[str]] = {}
    for crd in crds:
        group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
        wanted.setdefault(f"/openapi/v3/apis/{group}/{version}", set()).add(crd["spec"]["names"]["kind"])
    for url, kinds in wanted.items():
        while True:
            try:
                response = api_client.call_api(url, "GET", _preload_content=False, auth_settings=["BearerToken"])[0]
                schemas = json.loads(response.data).get("components", {}).get("schemas", {})
            except ApiException as exc:
                if exc.status != 404:  # 404: the group is not published at all yet
                    raise
                schemas = {}
            published = {name.rsplit(".", 1)[-1] for name in schemas}
            if kinds <= published:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} does not describe {sorted(kinds - published)} yet")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def control_plane(request, tmp_path_factory):
    from kubernetes import config as kconfig

    from lightbox.devtools.binaries import BinaryError
    from lightbox.devtools.controlplane import ControlPlane, ControlPlaneError

    log = _terminal_log(request)
    workdir = tmp_path_factory.mktemp("control-plane")
    cp = ControlPlane(workdir, log=log)
    try:
        cp.start()
    except (BinaryError, ControlPlaneError, OSError) as exc:
        pytest.fail(f"could not start the test control plane (etcd + kube-apiserver + kube-controller-manager) "
                    f"in {workdir}:\n{exc}", pytrace=False)
    try:
        files = crd_files()
        if files:
            api = kconfig.new_client_from_config(str(cp.kubeconfig))
            try:
                names = apply_crds(api, files)
            finally:
                api.close()
            log(f"applied {len(names)} CRDs from {CRDS_DIR}: {', '.join(names)}")
    except Exception as exc:  # noqa: BLE001
        cp.stop()
        pytest.fail(f"could not apply the CRDs in {CRDS_DIR} to the test control plane: {exc}", pytrace=False)
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(str(kubeconfig))
    yield api
    api.close()


def _namespace_name(request) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    base = re.sub(r"^test-", "", base)[:40].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request, api_client) -> str:
    """A new namespace labelled to enforce PodSecurity ``restricted``; its ``default`` ServiceAccount exists."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    name = _namespace_name(request)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={**RESTRICTED_LABELS, "lightbox.test/integration": "true"})))
    deadline = time.monotonic() + 30
    while True:  # pods cannot be created before the serviceaccount controller made `default`
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="session")
def kubectl(kubeconfig):
    """Run the system kubectl against the test control plane."""
    exe = shutil.which("kubectl")

    def run(*args: str, input: str | None = None, check: bool = False, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        if exe is None:
            pytest.fail("kubectl is not on PATH (needed by this test)", pytrace=False)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        proc = subprocess.run([exe, f"--kubeconfig={kubeconfig}", *args], input=input, capture_output=True,
                              text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def _sample_claim(tmp_path_factory) -> Path:
    """The sample dataset, generated once: writing its DICOM files takes seconds, copying them a fraction."""
    from operator_harness import make_claim

    return make_claim(tmp_path_factory.mktemp("sample-claim"))


@pytest.fixture
def claim(_sample_claim, tmp_path_factory) -> Path:
    """A copy of the sample claim that the test may change (add_phi writes beside it)."""
    return Path(shutil.copytree(_sample_claim, tmp_path_factory.mktemp("claim") / "root"))

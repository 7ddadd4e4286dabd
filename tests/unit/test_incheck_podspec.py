"""What the run pod gives the in-pod isolation check, and the GPU environment of each container."""

from __future__ import annotations

from factories import algorithm, dataset, policy, validation

from lightbox.api import run as layout
from lightbox.api.run import IsolationCheckConfig
from lightbox.operator import builders
from lightbox.operator.config import OperatorConfig

CONFIG = OperatorConfig(probe_dns="10.96.0.10:53", probe_outside="192.0.2.1:443", isolation_check_bound_seconds=45)


def pod_spec(gpus: int = 0, api_server: str | None = "https://10.0.0.1:6443", config: OperatorConfig = CONFIG):
    val = validation()
    val.metadata["uid"] = "uid-1"
    job = builders.run_job(
        val, algorithm(resources={"gpus": gpus}), dataset(), policy(), "chest-v1-r1", 1, config, api_server=api_server
    )
    spec = job["spec"]["template"]["spec"]
    return spec, {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def env(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_the_stage_step_runs_first_and_the_vendor_after_it():
    spec, _ = pod_spec()
    assert [c["name"] for c in spec["initContainers"]] == [layout.STAGE_CONTAINER, layout.VENDOR_CONTAINER]


def test_the_stage_step_learns_the_node_address_from_the_downward_api():
    _, by_name = pod_spec()
    node = env(by_name["stage"])[layout.NODE_IP_ENV]
    assert node == {"name": "LIGHTBOX_NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}


def test_the_stage_step_gets_the_operators_targets_and_bounds():
    _, by_name = pod_spec()
    config = IsolationCheckConfig.model_validate_json(env(by_name["stage"])["LIGHTBOX_ISOLATION_CHECK"]["value"])
    assert config.api_server == "https://10.0.0.1:6443"
    assert config.dns == ["10.96.0.10:53"] and config.outside == ["192.0.2.1:443"]
    assert config.bound_seconds == 45 and config.clean_rounds == 3
    assert config.gpus_allowed == 0


def test_a_configured_probe_api_server_wins_over_the_operators_own_url():
    _, by_name = pod_spec(config=OperatorConfig(probe_api_server="https://10.96.0.1:443"))
    config = IsolationCheckConfig.model_validate_json(env(by_name["stage"])["LIGHTBOX_ISOLATION_CHECK"]["value"])
    assert config.api_server == "https://10.96.0.1:443"


def test_only_the_stage_step_carries_the_check():
    _, by_name = pod_spec()
    assert "LIGHTBOX_ISOLATION_CHECK" not in env(by_name["vendor"]) and "LIGHTBOX_NODE_IP" not in env(by_name["vendor"])
    assert "LIGHTBOX_ISOLATION_CHECK" not in env(by_name["score"])


def test_a_cpu_run_pins_the_vendor_to_no_gpu_whatever_its_image_says():
    _, by_name = pod_spec(gpus=0)
    assert env(by_name["vendor"])["NVIDIA_VISIBLE_DEVICES"] == {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}
    assert "nvidia.com/gpu" not in by_name["vendor"]["resources"]["limits"]


def test_a_gpu_run_leaves_the_device_list_to_the_device_plugin():
    _, by_name = pod_spec(gpus=2)
    assert "NVIDIA_VISIBLE_DEVICES" not in env(by_name["vendor"])
    assert by_name["vendor"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_the_trusted_steps_that_check_ask_for_every_gpu_and_request_none():
    """The canary: if the node honours it, the check sees GPUs it did not request and refuses."""
    _, by_name = pod_spec()
    assert env(by_name["stage"])["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "nvidia.com/gpu" not in by_name["stage"]["resources"]["limits"]
    pol = policy()
    pol.metadata["uid"] = "uid-p"
    probe = builders.probe_pod(pol, "region", "lightbox-probe-default-1", CONFIG, "https://10.0.0.1:6443")
    (container,) = probe["spec"]["containers"]
    assert env(container)["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_the_namespace_probe_learns_the_node_address_too():
    pol = policy()
    pol.metadata["uid"] = "uid-p"
    probe = builders.probe_pod(pol, "region", "lightbox-probe-default-1", CONFIG, "https://10.0.0.1:6443")
    (container,) = probe["spec"]["containers"]
    assert env(container)["LIGHTBOX_NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}

"""Pod spec -> local process translation of the development runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightbox.api.run import TERMINATION_LOG_ENV
from lightbox.devtools.localrunner_config import RunnerConfig, load_config
from lightbox.devtools.localrunner_spec import (
    POD_MARKER_ENV,
    ContainerConfigError,
    HostVolume,
    ImagePullError,
    Mount,
    PodLayout,
    StartError,
    VolumeError,
    container_argv,
    container_env,
    container_mounts,
    expand_references,
    hidden_paths,
    image_repository,
    map_volumes,
    plan_container,
    pod_action,
    resolve_executable,
    rewrite_path,
    termination_message,
)

CLASSIFIER = "registry.lightbox.test/reference/classifier"
IMAGES = {CLASSIFIER: ["/venv/python", "-m", "lightbox.sandbox.reference.classifier"]}
COMMANDS = {"lightbox": ["/venv/python", "-m", "lightbox"], "python": ["/venv/python"]}


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (f"{CLASSIFIER}@sha256:{'a' * 64}", CLASSIFIER),
        (f"{CLASSIFIER}:1.2", CLASSIFIER),
        (f"{CLASSIFIER}:1.2@sha256:{'b' * 64}", CLASSIFIER),
        ("localhost:5000/team/model", "localhost:5000/team/model"),
        ("localhost:5000/team/model:v1", "localhost:5000/team/model"),
        ("busybox", "busybox"),
    ],
)
def test_image_repository_drops_tag_and_digest_but_not_port(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_argv_is_the_image_entry_point_plus_args_without_command() -> None:
    container = {"name": "vendor", "image": f"{CLASSIFIER}@sha256:{'a' * 64}", "args": ["--fast"]}
    assert container_argv(container, {}, IMAGES, COMMANDS) == [*IMAGES[CLASSIFIER], "--fast"]


def test_argv_is_command_plus_args_with_trusted_commands_resolved() -> None:
    container = {"name": "stage", "image": f"{CLASSIFIER}:1", "command": ["lightbox", "stage"], "args": ["--x"]}
    assert container_argv(container, {}, IMAGES, COMMANDS) == ["/venv/python", "-m", "lightbox", "stage", "--x"]


def test_unknown_image_fails_like_a_pull_even_with_a_command() -> None:
    container = {"name": "vendor", "image": "evil.example/model:1", "command": ["python", "-c", "pass"]}
    with pytest.raises(ImagePullError) as caught:
        container_argv(container, {}, IMAGES, COMMANDS)
    assert caught.value.reason == "ErrImagePull"
    assert "evil.example/model:1" in caught.value.message


def test_references_expand_like_kubernetes() -> None:
    env = {"IN": "/host/in"}
    assert expand_references("$(IN)/a $(MISSING) $$(IN) $$", env) == "/host/in/a $(MISSING) $(IN) $"


def test_argv_references_use_the_rewritten_environment() -> None:
    container = {"name": "c", "image": CLASSIFIER, "command": ["python", "-c", "x"], "args": ["$(LIGHTBOX_INPUT_DIR)"]}
    argv = container_argv(container, {"LIGHTBOX_INPUT_DIR": "/host/input"}, IMAGES, COMMANDS)
    assert argv[-1] == "/host/input"


def test_executable_is_looked_up_on_the_container_path() -> None:
    assert resolve_executable(["sh", "-c", "true"], "/bin", lambda name, path: f"{path}/{name}") == [
        "/bin/sh",
        "-c",
        "true",
    ]
    with pytest.raises(StartError, match="executable file not found"):
        resolve_executable(["nope"], "/bin", lambda name, path: None)


def pod(**spec: object) -> dict:
    return {"metadata": {"name": "run-1", "namespace": "team-a", "uid": "uid-1", "labels": {"app": "x"}}, "spec": spec}


def test_volumes_map_claims_and_empty_dirs(tmp_path: Path) -> None:
    spec = pod(
        volumes=[
            {"name": "studies", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
            {"name": "work", "emptyDir": {"sizeLimit": "1Gi"}},
        ]
    )
    volumes = map_volumes(spec, {"datasets": Path("/srv/datasets")}, tmp_path)
    assert volumes["studies"] == HostVolume("studies", Path("/srv/datasets"), "claim", True)
    assert volumes["work"] == HostVolume("work", tmp_path / "work", "emptyDir", False)


def test_namespaced_claim_mapping_wins(tmp_path: Path) -> None:
    spec = pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "datasets"}}])
    claims = {"datasets": Path("/any"), "team-a/datasets": Path("/team-a")}
    assert map_volumes(spec, claims, tmp_path)["d"].path == Path("/team-a")


@pytest.mark.parametrize(
    ("volume", "fragment"),
    [
        ({"name": "d", "persistentVolumeClaim": {"claimName": "unmapped"}}, '"unmapped" is not mapped'),
        ({"name": "token", "projected": {"sources": []}}, 'volume "token" of type projected'),
        ({"name": "h", "hostPath": {"path": "/etc"}}, "hostPath"),
    ],
)
def test_unsupported_volumes_fail_the_mount(tmp_path: Path, volume: dict, fragment: str) -> None:
    with pytest.raises(VolumeError) as caught:
        map_volumes(pod(volumes=[volume]), {}, tmp_path)
    assert caught.value.reason == "FailedMount"
    assert fragment in caught.value.message


def test_mounts_honour_sub_path_and_read_only() -> None:
    volumes = {
        "data": HostVolume("data", Path("/srv/ds"), "claim"),
        "ro": HostVolume("ro", Path("/srv/ro"), "claim", read_only=True),
    }
    container = {
        "name": "score",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/truth/", "subPath": "ds1/truth", "readOnly": True},
            {"name": "data", "mountPath": "/out"},
            {"name": "ro", "mountPath": "/ro"},
        ],
    }
    assert container_mounts(container, volumes) == [
        Mount("/data/truth", Path("/srv/ds/ds1/truth"), True),
        Mount("/out", Path("/srv/ds"), False),
        Mount("/ro", Path("/srv/ro"), True),
    ]


@pytest.mark.parametrize("sub", ["../escape", "/abs", "a/../../b"])
def test_sub_path_cannot_leave_its_volume(sub: str) -> None:
    volumes = {"data": HostVolume("data", Path("/srv/ds"), "claim")}
    with pytest.raises(VolumeError, match="subPath"):
        container_mounts({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": sub}]}, volumes)


MOUNTS = [
    Mount("/input", Path("/host/pod/input"), True),
    Mount("/data/truth", Path("/host/truth"), True),
    Mount("/data", Path("/host/data"), False),
]


@pytest.mark.parametrize(
    ("value", "rewritten"),
    [
        ("/input", "/host/pod/input"),
        ("/input/manifest.json", "/host/pod/input/manifest.json"),
        ("/inputs", "/inputs"),
        ("/data/truth/labels.json", "/host/truth/labels.json"),
        ("/data/other", "/host/data/other"),
        ("relative/input", "relative/input"),
        ("", ""),
    ],
)
def test_env_values_naming_mount_paths_become_host_paths(value: str, rewritten: str) -> None:
    assert rewrite_path(value, MOUNTS) == rewritten


def test_container_env_rewrites_values_and_sets_termination_log() -> None:
    container = {
        "name": "stage",
        "env": [
            {"name": "LIGHTBOX_INPUT_DIR", "value": "/input"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MANIFEST", "value": "$(LIGHTBOX_INPUT_DIR)/manifest.json"},
        ],
    }
    env = container_env(
        pod(),
        container,
        MOUNTS,
        base={"PATH": "/bin"},
        termination_log=Path("/host/term"),
        node_name="n",
        host_ip="127.0.0.1",
    )
    assert env["LIGHTBOX_INPUT_DIR"] == "/host/pod/input"
    assert env["MANIFEST"] == "/host/pod/input/manifest.json"
    assert (env["POD"], env["NS"], env["APP"]) == ("run-1", "team-a", "x")
    assert env[TERMINATION_LOG_ENV] == "/host/term"
    assert env[POD_MARKER_ENV] == "uid-1"
    assert env["PATH"] == "/bin"


@pytest.mark.parametrize(
    "container",
    [
        {"name": "c", "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        {"name": "c", "env": [{"name": "R", "valueFrom": {"fieldRef": {"fieldPath": "spec.volumes"}}}]},
        {"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]},
    ],
)
def test_unsupported_env_sources_are_config_errors(container: dict) -> None:
    with pytest.raises(ContainerConfigError) as caught:
        container_env(pod(), container, [], base={}, termination_log=Path("/t"), node_name="n", host_ip="h")
    assert caught.value.reason == "CreateContainerConfigError"


def test_hidden_paths_are_everything_not_mounted_but_keep_parents_of_mounts() -> None:
    mounts = [Mount("/data/studies", Path("/srv/ds/d1/studies"), True)]
    candidates = [
        Path("/srv/ds"),
        Path("/srv/ds/d1/truth"),
        Path("/srv/ds/d1/studies"),
        Path("/pod/work"),
        Path("/srv/other"),
    ]
    assert hidden_paths(candidates, mounts) == [Path("/pod/work"), Path("/srv/ds/d1/truth"), Path("/srv/other")]


def run_pod(tmp_path: Path) -> dict:
    return {
        "metadata": {"name": "run-1", "namespace": "team-a", "uid": "uid-1"},
        "spec": {
            "volumes": [
                {"name": "studies", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
                {"name": "truth", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
                {"name": "input", "emptyDir": {}},
                {"name": "output", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
            "initContainers": [
                {
                    "name": "vendor",
                    "image": f"{CLASSIFIER}@sha256:{'a' * 64}",
                    "volumeMounts": [
                        {"name": "input", "mountPath": "/input", "readOnly": True},
                        {"name": "output", "mountPath": "/output"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "containers": [
                {
                    "name": "score",
                    "image": "registry.lightbox.test/lightbox:1",
                    "command": ["lightbox", "score"],
                    "env": [{"name": "LIGHTBOX_TRUTH_DIR", "value": "/data/truth"}],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "truth", "mountPath": "/data/truth", "subPath": "d1/truth", "readOnly": True}
                    ],
                }
            ],
        },
    }


def test_plan_for_the_vendor_hides_the_ground_truth(tmp_path: Path) -> None:
    config = RunnerConfig(
        claims={"datasets": tmp_path / "ds"},
        images={CLASSIFIER: [sys.executable, "-m", "x"], "registry.lightbox.test/lightbox": [sys.executable]},
    )
    layout = PodLayout(tmp_path / "pod")
    spec = run_pod(tmp_path)
    volumes = map_volumes(spec, config.claims, layout.empty_dirs)
    plan = plan_container(
        spec,
        spec["spec"]["initContainers"][0],
        volumes=volumes,
        layout=layout,
        config=config,
        host_env={"PATH": "/usr/bin"},
    )
    assert plan.argv == [sys.executable, "-m", "x"]
    assert plan.read_only == [layout.empty_dirs / "input"]
    assert tmp_path / "ds" in plan.hidden and tmp_path / "ds" / "d1" / "truth" in plan.hidden
    assert layout.empty_dirs / "output" not in plan.hidden
    assert plan.env["TMPDIR"] == str(layout.empty_dirs / "tmp")
    assert plan.env["HOME"] == str(layout.scratch("vendor"))
    assert plan.env[TERMINATION_LOG_ENV] == str(layout.termination_log("vendor"))
    assert not plan.fallback_to_logs


def test_plan_for_the_scorer_sees_truth_but_not_the_vendor_dirs(tmp_path: Path) -> None:
    config = RunnerConfig(
        claims={"datasets": tmp_path / "ds"}, images={"registry.lightbox.test/lightbox": [sys.executable]}
    )
    layout = PodLayout(tmp_path / "pod")
    spec = run_pod(tmp_path)
    volumes = map_volumes(spec, config.claims, layout.empty_dirs)
    plan = plan_container(
        spec, spec["spec"]["containers"][0], volumes=volumes, layout=layout, config=config, host_env={}
    )
    assert plan.argv == [sys.executable, "-m", "lightbox", "score"]
    assert plan.env["LIGHTBOX_TRUTH_DIR"] == str(tmp_path / "ds" / "d1" / "truth")
    assert tmp_path / "ds" / "d1" / "truth" not in plan.hidden
    assert layout.empty_dirs / "input" in plan.hidden
    assert plan.fallback_to_logs


def test_termination_message_keeps_the_files_tail() -> None:
    data = b"x" * 5000 + b"END"
    assert termination_message(data, "", 0, False) == (b"x" * 4093 + b"END").decode()


def test_termination_message_falls_back_to_logs_only_on_failure() -> None:
    output = "".join(f"line {i}\n" for i in range(200))
    assert termination_message(b"", output, 0, True) == ""
    tail = termination_message(b"", output, 1, True)
    assert tail.endswith("line 199\n") and "line 119\n" not in tail and len(tail) <= 2048
    assert termination_message(b"", output, 1, False) == ""
    assert termination_message(b"{}", output, 1, True) == "{}"


NODE = "lightbox-local"
LABELS = {"kubernetes.io/hostname": NODE, "nvidia.com/gpu.present": "true"}


def labelled(node: str = "", phase: str = "Pending", **spec: object) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"nodeName": node, **spec} if node else dict(spec),
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("pod_", "action"),
    [
        (labelled(), "bind"),
        (labelled(nodeSelector={"nvidia.com/gpu.present": "true"}), "bind"),
        (labelled(nodeSelector={"gpu": "a100"}), "unschedulable"),
        (labelled(schedulingGates=[{"name": "kueue"}]), "ignore"),
        (labelled(NODE), "run"),
        (labelled(NODE, "Running"), "orphaned"),
        (labelled(NODE, "Succeeded"), "ignore"),
        (labelled("other-node"), "ignore"),
        (
            {**labelled(NODE, "Running"), "metadata": {"uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z"}},
            "finalize",
        ),
    ],
)
def test_pod_action(pod_: dict, action: str) -> None:
    assert pod_action(pod_, NODE, LABELS, []) == action


def test_taints_need_tolerations() -> None:
    taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert pod_action(labelled(), NODE, LABELS, taints) == "unschedulable"
    tolerating = labelled(tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert pod_action(tolerating, NODE, LABELS, taints) == "bind"


def test_config_loads_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("node_name: dev\nclaims: {datasets: /srv/ds}\nkeep_workdirs: true\n")
    (tmp_path / "c.json").write_text('{"images": {"a/b": ["python3"]}, "concurrency": 2}')
    yaml_config = load_config(tmp_path / "c.yaml")
    assert (yaml_config.node_name, yaml_config.claims, yaml_config.keep_workdirs) == (
        "dev",
        {"datasets": Path("/srv/ds")},
        True,
    )
    assert load_config(tmp_path / "c.json").concurrency == 2
    assert load_config(None).all_commands()["lightbox"] == [sys.executable, "-m", "lightbox"]
    with pytest.raises(ValueError):
        RunnerConfig.model_validate({"nodeName": "typo"})


def test_arguments_naming_mount_paths_become_host_paths() -> None:
    container = {
        "name": "verify",
        "image": CLASSIFIER,
        "command": ["python", "-m", "verifystep", "/data/truth", "--option", "x"],
    }
    argv = container_argv(container, {}, IMAGES, COMMANDS, MOUNTS)
    assert argv == ["/venv/python", "-m", "verifystep", "/host/truth", "--option", "x"]


def test_host_paths_under_tmp_are_not_rewritten_twice() -> None:
    mounts = [Mount("/tmp", Path("/tmp/runner/pod/volumes/tmp"), False)]
    container = {
        "name": "c",
        "image": CLASSIFIER,
        "env": [{"name": "TMPDIR", "value": "/tmp"}, {"name": "CACHE", "value": "$(TMPDIR)/cache"}],
        "args": ["$(TMPDIR)/x", "/tmp/y"],
    }
    env = container_env(pod(), container, mounts, base={}, termination_log=Path("/t"), node_name="n", host_ip="h")
    assert env["TMPDIR"] == "/tmp/runner/pod/volumes/tmp"
    assert env["CACHE"] == "/tmp/runner/pod/volumes/tmp/cache"
    argv = container_argv(container, env, IMAGES, COMMANDS, mounts)
    assert argv[-2:] == ["/tmp/runner/pod/volumes/tmp/x", "/tmp/runner/pod/volumes/tmp/y"]


def test_other_pods_directories_are_hidden(tmp_path: Path) -> None:
    config = RunnerConfig(images={"registry.lightbox.test/lightbox": [sys.executable]})
    layout = PodLayout(tmp_path / "pod")
    spec = run_pod(tmp_path)
    spec["spec"]["volumes"] = [v for v in spec["spec"]["volumes"] if "emptyDir" in v]
    main = {"name": "c", "image": "registry.lightbox.test/lightbox", "command": ["python", "-c", "pass"]}
    volumes = map_volumes(
        {"spec": {"volumes": spec["spec"]["volumes"]}, "metadata": spec["metadata"]}, {}, layout.empty_dirs
    )
    plan = plan_container(
        spec | {"spec": {"containers": [main]}},
        main,
        volumes=volumes,
        layout=layout,
        config=config,
        host_env={},
        other_pods=[tmp_path / "other"],
    )
    assert tmp_path / "other" in plan.hidden


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("1Gi", 1 << 30), ("512Mi", 512 << 20), ("2G", 2 * 10**9), ("100", 100), ("1.5Ki", 1536), ("bad", None)],
)
def test_quantities(quantity: str, size: int | None) -> None:
    from lightbox.devtools.localrunner_spec import quantity_bytes

    assert quantity_bytes(quantity) == size


def test_memory_and_ephemeral_storage_limits_in_bytes() -> None:
    from lightbox.devtools.localrunner_spec import limit_bytes

    container = {"resources": {"limits": {"ephemeral-storage": "1Gi", "memory": "512Mi", "cpu": "1"}}}
    assert limit_bytes(container, "ephemeral-storage") == 1 << 30
    assert limit_bytes(container, "memory") == 512 << 20
    assert limit_bytes({"name": "c"}, "memory") is None


def test_cli_prints_an_effective_config_that_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightbox.devtools.localrunner import main

    (tmp_path / "in.yaml").write_text("claims: {datasets: /srv/ds}\n")
    assert main(["--config", str(tmp_path / "in.yaml"), "--print-config"]) == 0
    (tmp_path / "out.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "out.yaml") == load_config(tmp_path / "in.yaml")

"""vendor check --image: how the container is run, and what is refused before it runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lightbox.devtools import oci
from lightbox.sandbox import imagecheck, vendorcheck
from lightbox.sandbox.contract import vendor_environment
from lightbox.sandbox.isolation import IsolationUnavailable

SPEC = imagecheck.ContainerSpec(
    image="localhost/vendor:1",
    args=(),
    env={"LIGHTBOX_TASK": "classification"},
    input_dir=Path("/tmp/in"),
    output_dir=Path("/tmp/out"),
    memory_bytes=256 << 20,
    name="lightbox-check-1",
    netns=Path("/var/run/netns/lightbox-check-1"),
    tmp_dir=Path("/tmp/scratch"),
    max_processes=512,
    cgroup="/lightbox-vendor-check/lightbox-check-1",
)


def _flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_ctr_runs_the_image_as_the_pod_does() -> None:
    argv = imagecheck.ctr_argv(("ctr", "--address", "/s.sock"), SPEC)
    assert argv[:4] == ["ctr", "--address", "/s.sock", "run"]
    assert {"--rm", "--read-only", "--seccomp"} <= set(argv)
    # no network: neither the host's nor a CNI one; the namespace made for the check
    assert "--net-host" not in argv and "--cni" not in argv and "--privileged" not in argv
    assert _flag_values(argv, "--with-ns") == ["network:/var/run/netns/lightbox-check-1"]
    # the input read-only, the output and a scratch /tmp writable (both bounded tmpfs on the host), and ctr's
    # writable default /run covered read-only; nothing else of the host
    assert _flag_values(argv, "--mount") == [
        "type=bind,src=/tmp/in,dst=/input,options=rbind:ro",
        "type=bind,src=/tmp/out,dst=/output,options=rbind:rw",
        "type=bind,src=/tmp/scratch,dst=/tmp,options=rbind:rw",
        "type=tmpfs,src=tmpfs,dst=/run,options=ro:nosuid:nodev:noexec",
    ]
    assert _flag_values(argv, "--memory-limit") == [str(256 << 20)]
    # every capability of ctr's default set (containerd oci/spec.go defaultUnixCaps) is dropped
    assert set(_flag_values(argv, "--cap-drop")) == {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    }
    assert argv[-2:] == ["localhost/vendor:1", "lightbox-check-1"]


@pytest.mark.parametrize(("runtime", "network"), [("podman", "ns:/var/run/netns/lightbox-check-1"), ("docker", "none")])
def test_podman_and_docker_get_the_same_limits(runtime: str, network: str) -> None:
    argv = imagecheck.podman_docker_argv(runtime, SPEC)
    assert argv[:3] == [runtime, "run", "--rm"] and "--read-only" in argv
    assert _flag_values(argv, "--network") == [network]
    assert _flag_values(argv, "--cap-drop") == ["ALL"] and _flag_values(argv, "--user") == ["65532:65532"]
    assert _flag_values(argv, "--mount") == [
        "type=bind,src=/tmp/in,dst=/input,readonly",
        "type=bind,src=/tmp/out,dst=/output",
        "type=bind,src=/tmp/scratch,dst=/tmp",
    ]
    assert ("--read-only-tmpfs=false" in argv) == (runtime == "podman")
    assert _flag_values(argv, "--pids-limit") == ["512"]
    assert _flag_values(argv, "--memory") == _flag_values(argv, "--memory-swap") == [str(256 << 20)]
    assert "--privileged" not in argv and "--net=host" not in argv


def test_the_container_gets_the_contract_environment_with_its_own_paths() -> None:
    env = {"PATH": "/home/me/.venv/bin", "LANG": "C.UTF-8",
           **vendor_environment("segmentation", ["a"], "/tmp/x/input", "/tmp/x/output")}
    got = imagecheck.container_env(env, Path("/tmp/x/input"), Path("/tmp/x/output"))
    assert got == {
        "LIGHTBOX_INPUT_DIR": "/input", "LIGHTBOX_OUTPUT_DIR": "/output", "LIGHTBOX_CONTRACT_VERSION": "v1",
        "LIGHTBOX_TASK": "segmentation", "LIGHTBOX_LABELS": '["a"]', "HOME": "/output", "TMPDIR": "/output",
    }


def test_network_attempts_are_read_from_the_namespace_counters() -> None:
    # the layout of /proc/net/snmp and snmp6 (Linux net/ipv4/proc.c, net/ipv6/proc.c), numbers chosen here
    snmp = (
        "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards "
        "InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout\n"
        "Ip: 2 64 0 0 0 0 0 0 0 0 0 3 0\n"
        "Icmp: InMsgs InErrors\nIcmp: 0 0\n"
    )
    snmp6 = "Ip6InReceives                   \t0\nIp6OutNoRoutes                  \t1\nIp6ReasmTimeout 0\n"
    assert imagecheck.no_route_count(snmp, snmp6) == 4
    assert imagecheck.no_route_count(snmp) == 3


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (1, 1), (137, -9), (143, -15)])
def test_runtime_exit_codes_become_signals(code: int, expected: int) -> None:
    assert imagecheck.exit_to_returncode(code) == expected


def test_docker_without_its_daemon_is_not_a_runtime() -> None:
    assert imagecheck.choose_runtime("auto", lambda r: r == "ctr") == "ctr"
    assert imagecheck.choose_runtime("auto", lambda r: r in ("podman", "ctr")) == "podman"
    with pytest.raises(IsolationUnavailable, match="no container runtime"):
        imagecheck.choose_runtime("auto", lambda r: False)
    with pytest.raises(IsolationUnavailable, match="docker is not available"):
        imagecheck.choose_runtime("docker", lambda r: False)


def _archive(tmp_path: Path, env: list[str]) -> Path:
    store = oci.BlobStore(tmp_path / "blobs")
    layer_file = tmp_path / "l.tar.gz"
    made = oci.write_layer([oci.Entry("opt/x", "file", 0o644, data=b"x")], layer_file, 0)
    layer = oci.Layer(store.put_file(layer_file, oci.MEDIA_LAYER_GZIP), made.diff_id)
    config = store.put_bytes(oci.canonical_json(oci.image_config(
        [layer], env=env, entrypoint=["python"], cmd=None, user="65532", workdir="/", labels={})), oci.MEDIA_CONFIG)
    manifest = store.put_bytes(oci.canonical_json(oci.manifest(config, [layer])), oci.MEDIA_MANIFEST)
    oci.write_archive(store, manifest, "localhost/vendor", "1.0", tmp_path / "a.tar", 0)
    return tmp_path / "a.tar"


def test_the_archive_names_its_image_and_config_env(tmp_path: Path) -> None:
    name, env = imagecheck.archive_image(_archive(tmp_path, ["PATH=/bin", "A=1"]))
    assert name == "localhost/vendor:1.0" and env == ["PATH=/bin", "A=1"]


def test_for_ctr_the_image_gets_the_pods_user_and_keeps_its_layers(tmp_path: Path) -> None:
    import hashlib
    import tarfile

    src = _archive(tmp_path, ["PATH=/bin"])
    name = imagecheck.derive_archive(src, tmp_path / "derived.tar", "65532:65532")
    assert name == "localhost/vendor:1.0"
    with tarfile.open(tmp_path / "derived.tar") as tar, tarfile.open(src) as orig:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        original = {m.name: orig.extractfile(m).read() for m in orig.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == name
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'][7:]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["User"] == "65532:65532" and config["config"]["Entrypoint"] == ["python"]
    for name_, data in files.items():
        if name_.startswith("blobs/"):
            assert hashlib.sha256(data).hexdigest() == name_.rsplit("/", 1)[1]
    layer = manifest["layers"][0]["digest"][7:]
    assert files[f"blobs/sha256/{layer}"] == original[f"blobs/sha256/{layer}"]


@pytest.mark.parametrize("variable", ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"])
def test_an_image_that_sets_nvidia_variables_is_refused_before_it_runs(tmp_path: Path, variable: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_runtime(*args: object, **kwargs: object) -> str:
        raise AssertionError("the image must be refused before a runtime is chosen")

    monkeypatch.setattr(imagecheck, "choose_runtime", no_runtime)
    out = io.StringIO()
    code = imagecheck.check_image(
        f"oci-archive:{_archive(tmp_path, ['PATH=/bin', variable])}", [], vendorcheck.CheckSettings(), out=out
    )
    text = out.getvalue()
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert f"sets {variable} in its config" in text and "resources.gpus" in text and "verdict: NOT CONFORMANT" in text


def test_other_nvidia_variables_are_not_refused() -> None:
    # NVIDIA_REQUIRE_CUDA only states a requirement; it gives no device
    assert imagecheck.refused_env(["NVIDIA_REQUIRE_CUDA=cuda>=12", "PATH=/bin", "XNVIDIA_VISIBLE_DEVICES=all"]) == []


def test_a_missing_archive_is_named(tmp_path: Path) -> None:
    out = io.StringIO()
    code = imagecheck.check_image(f"oci-archive:{tmp_path / 'nope.tar'}", [], vendorcheck.CheckSettings(), out=out)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT and "no such OCI archive" in out.getvalue()


def test_without_a_runtime_the_check_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagecheck, "_available", lambda runtime: False)
    out = io.StringIO()
    code = imagecheck.check_image("localhost/vendor:1", [], vendorcheck.CheckSettings(), out=out)
    assert (
        code == vendorcheck.EXIT_CANNOT_CHECK
        and "no container runtime" in out.getvalue()
        and "not run" in out.getvalue()
    )


def test_cli_accepts_an_image_without_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_check(ref: str, command: list[str], settings: vendorcheck.CheckSettings, **kw: object) -> int:
        seen.update(ref=ref, command=command, runtime=kw["runtime"], memory=settings.max_memory_bytes)
        return 0

    monkeypatch.setattr(imagecheck, "check_image", fake_check)
    assert (
        vendorcheck.main(
            ["check", "--image", "localhost/x:1", "--runtime", "ctr", "--memory-mb", "256", "--", "tamper"]
        )
        == 0
    )
    assert seen == {"ref": "localhost/x:1", "command": ["tamper"], "runtime": "ctr", "memory": 256 << 20}
    assert json.dumps(seen)  # plain values only


def test_usage_counts_entries_and_file_bytes_without_following_links(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100)
    (tmp_path / "b").write_bytes(b"y" * 28)
    (tmp_path / "link").symlink_to("/etc/passwd")
    assert imagecheck.tree_usage(tmp_path) == (4, 128)  # d, d/a, b, link; the link's target is not counted


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_digest_is_the_one_manifest_the_index_names(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    index = {"schemaVersion": 2, "manifests": [{"digest": digest, "size": 1}]}
    assert imagecheck.archive_digest(_tar(tmp_path / "a.tar", {"index.json": json.dumps(index).encode()})) == digest


@pytest.mark.parametrize("files", [
    {"oci-layout": b"{}"},                                                            # no index at all
    {"index.json": b'{"manifests": []}'},                                             # names nothing
    {"index.json": json.dumps({"manifests": [{"digest": "sha256:" + "a" * 64},
                                             {"digest": "sha256:" + "b" * 64}]}).encode()},   # two images
])
def test_archive_digest_refuses_an_archive_not_of_one_image(tmp_path: Path, files: dict[str, bytes]) -> None:
    with pytest.raises(imagecheck.ImageRefused, match="the index must name one image"):
        imagecheck.archive_digest(_tar(tmp_path / "a.tar", files))

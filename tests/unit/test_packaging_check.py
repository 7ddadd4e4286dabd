"""``lightbox vendor check --packaging``: the MAP- and grand-challenge-shaped reference
algorithms pass; algorithms that break the packaging's rules or the sandbox fail with the reason;
a MAP's manifests are read from a folder and from an OCI archive's layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from lightbox.sandbox import vendorcheck
from lightbox.sandbox.isolation import IsolationUnavailable, run_isolated
from lightbox.sandbox.packaging_map import ManifestError, check_algorithm_spec, parse_manifests, read_from_archive
from lightbox.sandbox.vendorcheck import CheckSettings, run_check

PY = sys.executable


def _namespaces() -> bool:
    try:
        run_isolated(["true"], env={"PATH": "/usr/bin:/bin"}, timeout=20)
    except IsolationUnavailable:
        return False
    return True


needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="namespaces unavailable here")


def check(command: list[str], **settings: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(command, CheckSettings(**{"cases": 4, "timeout": 60.0, **settings}), out)  # type: ignore[arg-type]
    return code, out.getvalue()


def module(name: str, *args: str) -> list[str]:
    return [PY, "-m", f"lightbox.sandbox.reference.{name}", *args]


@needs_namespaces
@pytest.mark.parametrize(
    "packaging, task, name",
    [
        ("monai-map", "segmentation", "map_segmenter"),
        ("monai-map", "classification", "map_classifier"),
        ("monai-map", "detection", "map_detector"),
        ("grand-challenge", "classification", "gc_classifier"),
        ("grand-challenge", "segmentation", "gc_segmenter"),
    ],
)
def test_reference_algorithms_of_each_packaging_pass(packaging, task, name):
    code, text = check(module(name), packaging=packaging, task=task)
    assert code == vendorcheck.EXIT_CONFORMANT, text
    assert "exited with code 0 for each of 4 cases" in text and "no network use" in text
    assert f"a readable {packaging} result for each of 4 cases" in text
    assert f"verdict: CONFORMANT to packaging {packaging}" in text


@needs_namespaces
def test_a_contract_algorithm_checked_as_a_map_is_told_what_is_missing():
    # the lightbox classifier looks for /input/manifest.json, which a MAP's input does not have
    code, text = check(module("classifier"), packaging="monai-map")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "exited with code 1" in text and "(cases case-0001, case-0002, case-0003, case-0004 (4))" in text
    assert "no result: one JSON file (or results.json) or one DICOM SR expected" in text


@needs_namespaces
def test_a_case_cannot_see_another_cases_input_or_the_truth():
    script = (
        "import os, json\n"
        "seen = sorted(os.listdir('/input'))\n"
        "assert 'inputs.json' in seen and not any(s.startswith('case-') for s in seen), seen\n"
        "assert not os.path.exists('/input/../input/case-0002')\n"
        "open('/output/r.json', 'w').write(json.dumps(0.5))\n"
    )
    code, text = check([PY, "-c", script], packaging="grand-challenge")
    assert code == vendorcheck.EXIT_CONFORMANT, text


@needs_namespaces
def test_a_link_in_place_of_a_result_is_refused_like_the_scorer_refuses_the_run():
    script = "import os\nos.symlink('/etc/hostname', '/output/r.json')\n"
    code, text = check([PY, "-c", script], packaging="grand-challenge")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "refused, as the scorer refuses the whole run" in text and "symbolic link" in text


@needs_namespaces
def test_network_use_in_a_per_case_run_is_reported():
    # misbehave's attempts; in the check's own network namespace, without routes, nothing leaves
    script = (
        "from lightbox.sandbox.reference import misbehave\n"
        "try:\n    misbehave._network()\nexcept Exception:\n    pass\n"
        "open('/output/r.json', 'w').write('0.5')\n"
    )
    code, text = check([PY, "-c", script], packaging="grand-challenge")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "tried to use the network" in text


@needs_namespaces
def test_a_map_manifest_folder_is_read_and_its_needs_shown(tmp_path):
    (tmp_path / "app.json").write_text(
        json.dumps(
            {"command": '["python3", "/opt/holoscan/app"]', "input": {"path": "input/"}, "output": {"path": "output/"}}
        )
    )
    (tmp_path / "pkg.json").write_text(json.dumps({"resources": {"cpu": 2, "gpu": 1, "memory": "8Gi"}}))
    code, text = check(
        module("map_segmenter"), packaging="monai-map", task="segmentation", manifest=tmp_path / "app.json"
    )
    assert code == vendorcheck.EXIT_CONFORMANT, text
    assert "MAP manifest (spec 1.0): command python3 /opt/holoscan/app; needs cpu 2, memory 8Gi, gpu 1" in text
    (tmp_path / "app.json").write_text(json.dumps({"command": "run"}))
    code, text = check(
        module("map_segmenter"), packaging="monai-map", task="segmentation", manifest=tmp_path / "app.json"
    )
    assert code == vendorcheck.EXIT_NOT_CONFORMANT and "app.json: 'input' is required" in text


# --- manifests -----------------------------------------------------------------------------


def test_manifests_of_both_spec_versions():
    v1 = parse_manifests(
        json.dumps(
            {
                "command": '["python3", "-u", "/opt/holoscan/app"]',
                "input": {"path": "input/"},
                "output": {"path": "output/"},
                "environment": {"HOLOSCAN_INPUT_PATH": "/var/holoscan/input"},
            }
        ).encode(),
        json.dumps({"resources": {"cpu": 1.5, "gpu": 1, "memory": "2048Mi"}}).encode(),
    )
    assert v1.command == ["python3", "-u", "/opt/holoscan/app"] and (v1.cpu, v1.gpu, v1.memory) == (1.5, 1, "2048Mi")
    v01 = parse_manifests(
        json.dumps({"command": "python3 -u /opt/monai/app/app.py", "input": {"path": "input"}, "output": {}}).encode(),
        None,
        "0.1",
    )
    assert v01.command == ["python3", "-u", "/opt/monai/app/app.py"] and (v01.cpu, v01.gpu, v01.memory) == (
        1.0,
        0,
        "1Gi",
    )


@pytest.mark.parametrize(
    "app, pkg, field",
    [
        (b"[]", None, "app.json must be a JSON object"),
        (b"{", None, "app.json is not JSON"),
        (json.dumps({"input": {}, "output": {}}).encode(), None, "'command' must be a non-empty command"),
        (json.dumps({"command": ["a"], "output": {}}).encode(), None, "'input' is required"),
        (
            json.dumps({"command": ["a"], "input": {}, "output": {}}).encode(),
            json.dumps({"resources": {"memory": "lots"}}).encode(),
            "resources.memory",
        ),
        (
            json.dumps({"command": ["a"], "input": {}, "output": {}}).encode(),
            json.dumps({"resources": {"gpu": -1}}).encode(),
            "resources.gpu not negative",
        ),
        (b" " * (1 << 20) + b"{}", None, "larger than"),
    ],
)
def test_bad_manifests_name_the_field(app, pkg, field):
    with pytest.raises(ManifestError, match=field.replace("(", r"\(")):
        parse_manifests(app, pkg)


def test_algorithm_resources_below_the_maps_needs_are_named():
    manifest = parse_manifests(
        json.dumps({"command": ["a"], "input": {}, "output": {}}).encode(),
        json.dumps({"resources": {"cpu": 2, "gpu": 1, "memory": "8Gi"}}).encode(),
    )
    spec = {"packaging": "monai-map", "resources": {"cpu": "1", "memory": "4Gi", "gpus": 0}}
    assert check_algorithm_spec(spec, manifest) == [
        "spec.resources.cpu 1 is below the MAP's pkg.json resources.cpu 2.0",
        "spec.resources.memory 4Gi is below the MAP's pkg.json resources.memory 8Gi",
        "spec.resources.gpus 0 is below the MAP's pkg.json resources.gpu 1",
    ]
    assert (
        check_algorithm_spec(
            {"packaging": "monai-map", "resources": {"cpu": "2", "memory": "8Gi", "gpus": 1}}, manifest
        )
        == []
    )


def _layer(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return gzip.compress(buf.getvalue())


def _archive(path: Path, layers: list[bytes]) -> Path:
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {}}).encode())
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(layer)} for layer in layers],
    }
    ref = put(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **ref,
                "annotations": {"io.containerd.image.name": "localhost/map:1"},
            }
        ],
    }
    with tarfile.open(path, "w") as tar:
        for name, data in {
            "index.json": json.dumps(index).encode(),
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            **{f"blobs/sha256/{d[7:]}": b for d, b in blobs.items()},
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_manifests_are_read_from_the_images_layers_later_layers_winning(tmp_path):
    old = json.dumps({"command": "old", "input": {}, "output": {}}).encode()
    new = json.dumps({"command": ["python3", "/opt/holoscan/app"], "input": {}, "output": {}}).encode()
    pkg = json.dumps({"resources": {"cpu": 4, "memory": "16Gi", "gpu": 1}}).encode()
    path = _archive(
        tmp_path / "map.tar",
        [
            _layer({"etc/holoscan/app.json": old, "etc/monai/app.json": old}),
            _layer({"etc/holoscan/app.json": new, "etc/holoscan/pkg.json": pkg}),
        ],
    )
    got = read_from_archive(path)
    assert got.command == ["python3", "/opt/holoscan/app"] and (got.cpu, got.memory, got.gpu) == (4.0, "16Gi", 1)
    # a later layer's whiteout deletes the 1.0 manifest: the 0.1 one is what is left
    deleted = _archive(
        tmp_path / "wh.tar",
        [
            _layer({"etc/holoscan/app.json": new, "etc/monai/app.json": old}),
            _layer({"etc/holoscan/.wh.app.json": b""}),
        ],
    )
    assert read_from_archive(deleted).command == ["old"] and read_from_archive(deleted).spec_version == "0.1"
    bare = _archive(tmp_path / "bare.tar", [_layer({"opt/app/run": b"#!/bin/sh\n"})])
    with pytest.raises(ManifestError, match="no /etc/holoscan/app.json"):
        read_from_archive(bare)


@needs_namespaces
def test_image_mode_runs_the_runner_once_per_case_with_only_that_cases_input(tmp_path):
    # --image puts an ImageRunner in run_isolated's place; any runner gets one call per case
    seen: list[str] = []

    def runner(argv, **kwargs):
        (host_input, target) = kwargs["view"].binds[0]
        seen.append(f"{Path(host_input).name}->{target}")
        return run_isolated(argv, **kwargs)

    code, text = check(module("gc_classifier"), packaging="grand-challenge", runner=runner)
    assert code == vendorcheck.EXIT_CONFORMANT, text
    assert seen == [f"case-000{i}->/input" for i in range(1, 5)]


def test_image_mode_passes_a_maps_folder_variables_with_the_containers_paths():
    from lightbox.sandbox import imagecheck, packaging

    env = {"PATH": "/host/bin", **packaging.vendor_environment("monai-map", "/tmp/x/in", "/tmp/x/out")}
    got = imagecheck.container_env(env, Path("/tmp/x/in"), Path("/tmp/x/out"))
    assert got["HOLOSCAN_INPUT_PATH"] == got["MONAI_INPUTPATH"] == "/input"
    assert got["HOLOSCAN_OUTPUT_PATH"] == got["MONAI_OUTPUTPATH"] == got["HOLOSCAN_WORKDIR"] == "/output"
    assert "PATH" not in got


def test_image_mode_reads_a_maps_manifests_from_the_archive_or_says_why_not(tmp_path):
    from lightbox.sandbox import imagecheck

    app = json.dumps({"command": ["python3", "/opt/holoscan/app"], "input": {}, "output": {}}).encode()
    path = _archive(tmp_path / "map.tar", [_layer({"etc/holoscan/app.json": app})])
    assert imagecheck._map_manifest(f"oci-archive:{path}")["map_manifest"].command == ["python3", "/opt/holoscan/app"]
    assert "give the image as oci-archive:PATH" in imagecheck._map_manifest("localhost/map:1")["map_manifest_error"]
    bare = _archive(tmp_path / "bare.tar", [_layer({"opt/x": b"x"})])
    assert "no /etc/holoscan/app.json" in imagecheck._map_manifest(f"oci-archive:{bare}")["map_manifest_error"]


def _planned_runner(plan: dict[str, str]):
    """Stands in for the sandbox (as --image's runner does): writes each case's result as ``plan``
    says, a likelihood by default, nothing for "missing", broken JSON for "unreadable"."""
    from lightbox.sandbox.isolation import IsolationResult

    def runner(argv, **kwargs):
        out = Path(kwargs["view"].output_host)
        out.mkdir(parents=True, exist_ok=True)
        what = plan.get(out.name, "ok")
        if what == "ok":
            (out / "abnormal-likelihood.json").write_text("0.7" if out.name[-1] in "135" else "0.2")
        elif what == "unreadable":
            (out / "abnormal-likelihood.json").write_text("{not json")
        return IsolationResult(
            returncode=0, timed_out=False, seconds=0.1, stdout=b"", stderr=b"", output_truncated=False
        )

    return runner


@pytest.mark.parametrize("packaging", ["grand-challenge", "monai-map"])
def test_missing_and_unreadable_results_are_counted_as_a_run_counts_them(packaging):
    # 6 cases; case-0002 leaves no result and case-0004 an unreadable one: 4 of 6 can be scored.
    plan = {"case-0002": "missing", "case-0004": "unreadable"}
    code, text = check(["vendor-algorithm"], cases=6, packaging=packaging, runner=_planned_runner(plan))
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "exited with code 0 for each of 6 cases" in text  # exit codes alone would not show it
    assert "FAIL  the scorer scored 4 of 6 cases" in text
    assert f"FAIL  a readable {packaging} result for 4 of 6 cases" in text
    assert "no result: one JSON file" in text and ": case-0002 (1)" in text
    assert "not valid JSON" in text and ": case-0004 (1)" in text


def test_no_result_at_all_is_zero_scored_not_a_crash():
    plan = {f"case-000{i}": "missing" for i in range(1, 5)}
    code, text = check(["vendor-algorithm"], packaging="grand-challenge", runner=_planned_runner(plan))
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "a readable grand-challenge result for 0 of 4 cases" in text
    assert "the scorer scored 0 of 4 cases" in text


def test_every_result_readable_is_every_case_scored():
    code, text = check(["vendor-algorithm"], cases=6, packaging="grand-challenge", runner=_planned_runner({}))
    assert code == vendorcheck.EXIT_CONFORMANT, text
    assert "a readable grand-challenge result for each of 6 cases" in text
    assert "the scorer scored" not in text

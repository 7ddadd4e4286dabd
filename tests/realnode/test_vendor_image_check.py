"""``vendor check --image`` with containerd: the reference images themselves, run as the pod runs them.

Needs root, containerd, runc and ip (a private containerd is started for each check); the images
come from ``lightbox.devtools.images.build`` (cached). Each verdict is compared with the command
mode's on the same sample: the image and the command must fail for the same reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightbox.devtools import images
from lightbox.sandbox import imagecheck, vendorcheck

CASES = 8


def _unavailable() -> str | None:
    from lightbox.devtools.node_packages import PackageError, ensure_packages

    if os.geteuid() != 0:
        return "needs root (containerd, network namespaces, a tmpfs for the output)"
    try:  # a fresh machine (CI's) gets them from the project's own code
        ensure_packages(lambda line: None, packages={"containerd": "/usr/bin/containerd", "runc": "/usr/sbin/runc",
                                                     "mmdebstrap": "/usr/bin/mmdebstrap"})
    except PackageError as exc:
        return str(exc)
    missing = [t for t in ("containerd", "ctr", "runc", "ip") if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (apt-get install containerd runc iproute2)" if missing else None


@pytest.fixture(scope="module")
def built(built_images: dict[str, images.BuiltImage]) -> dict[str, images.BuiltImage]:
    """The session's images (conftest.built_images: built once, the tier's other tests run the same ones)."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"vendor check --image cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"vendor check --image: {reason}")
    return {name: built_images[name] for name in ("classifier", "misbehave")}


@pytest.fixture(scope="module")
def containerd(built: dict[str, images.BuiltImage]) -> Iterator[Path]:
    """One private containerd for the module: each image is unpacked once, not once per check."""
    with imagecheck.private_containerd() as socket:
        yield socket


def image_check(socket: Path, image: images.BuiltImage, args: list[str], **settings: object) -> tuple[int, str]:
    out = io.StringIO()
    code = imagecheck.check_image(
        f"oci-archive:{image.archive}",
        args,
        vendorcheck.CheckSettings(cases=CASES, **settings),  # type: ignore[arg-type]
        runtime="ctr",
        containerd_address=socket,
        out=out,
    )
    return code, out.getvalue()


def command_check(args: list[str], **settings: object) -> tuple[int, str]:
    out = io.StringIO()
    code = vendorcheck.run_check([sys.executable, "-m", "lightbox.sandbox.reference.misbehave", *args],
                                 vendorcheck.CheckSettings(cases=CASES, **settings), out)  # type: ignore[arg-type]
    return code, out.getvalue()


def fail_lines(text: str) -> list[str]:
    # the number of blocked attempts depends on the resolver configuration each sandbox has
    # and the peak task count on the sampling moment
    return [re.sub(r"\(peak \d+\)", "(peak N)", re.sub(r"\(\d+ blocked", "(N blocked", line.strip()))
            for line in text.splitlines() if line.strip().startswith("FAIL")]


def test_the_reference_classifier_image_conforms(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    code, text = image_check(containerd, built["classifier"], [])
    assert code == vendorcheck.EXIT_CONFORMANT, text
    assert "runtime: ctr" in text and f"({CASES}/{CASES} cases)" in text and "no network use" in text


def test_a_network_attempt_fails_as_in_command_mode(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    code, text = image_check(containerd, built["misbehave"], ["network"])
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "tried to use the network" in text and "ship weights in the image" in text
    command_code, command_text = command_check(["network"])
    assert command_code == code
    assert fail_lines(text) == fail_lines(command_text), (text, command_text)


@pytest.mark.parametrize(("mode", "settings"), [
    ("read-truth", {}), ("leak-phi", {}), ("malformed", {}), ("schema", {}), ("flood", {"max_output_bytes": 2 << 20}),
])
def test_other_misbehaviour_fails_as_in_command_mode(
    containerd: Path, built: dict[str, images.BuiltImage], mode: str, settings: dict[str, int]
) -> None:
    code, text = image_check(containerd, built["misbehave"], [mode], **settings)
    command_code, command_text = command_check([mode], **settings)
    assert code == command_code == vendorcheck.EXIT_NOT_CONFORMANT, (text, command_text)
    assert fail_lines(text) == fail_lines(command_text), (text, command_text)


def test_writes_outside_the_output_are_contained_as_in_command_mode(
    containerd: Path, built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    code, text = image_check(containerd, built["misbehave"], ["tamper"], keep=tmp_path / "image")
    command_code, command_text = command_check(["tamper"], keep=tmp_path / "command")
    # both: the attempts on /input fail, then the honest predictions conform
    assert code == command_code == vendorcheck.EXIT_CONFORMANT, (text, command_text)
    manifest = json.loads((tmp_path / "image" / "input" / "manifest.json").read_text())
    assert len(manifest["cases"]) == CASES


def test_the_image_cmd_runs_when_no_arguments_are_given(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    # the misbehave image's CMD is ["network"]: the same failure without arguments
    code, text = image_check(containerd, built["misbehave"], [])
    assert code == vendorcheck.EXIT_NOT_CONFORMANT and "tried to use the network" in text, text


def test_a_memory_hog_is_killed_by_the_cgroup_limit(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    code, text = image_check(containerd, built["misbehave"], ["hog"], max_memory_bytes=256 << 20)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "went over the memory limit of 256 MiB" in text and "OOMKilled" in text


def test_a_hang_is_killed_at_the_time_limit(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    code, text = image_check(containerd, built["misbehave"], ["hang"], timeout=20.0)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "did not exit within 20 s and was killed" in text


def test_containerd_reports_the_digest_the_build_printed(containerd: Path, built: dict[str, images.BuiltImage]) -> None:
    """The chart pins BuiltImage.digest: containerd must know the image by that digest after an import."""
    import subprocess

    image = built["classifier"]
    ctr = ["ctr", "--address", str(containerd), "--namespace", "lightbox-images-test"]
    # --no-unpack: the names and digests are the question here; unpacking into this namespace took ~50 s
    subprocess.run([*ctr, "images", "import", "--no-unpack", "--digests", "--base-name", image.repository,
                    str(image.archive)], check=True, capture_output=True)
    listed = subprocess.run([*ctr, "images", "ls"], check=True, capture_output=True, text=True).stdout.split("\n")[1:]
    targets = {line.split()[0]: line.split()[2] for line in listed if line.strip()}
    subprocess.run([*ctr, "images", "rm", *targets], capture_output=True)
    assert targets[image.ref] == image.digest
    assert targets[image.pinned] == image.digest


WRITER = b"""import sys
with open("/tmp/scratch.bin", "wb") as fh:
    fh.write(b"x" * 4096)
from lightbox.sandbox.reference import classifier
sys.exit(classifier.main([]))
"""


def _image_with_script(base: images.BuiltImage, script: bytes, tmp_path: Path) -> Path:
    """``base`` plus /opt/writer.py as its entrypoint: a vendor image that writes to /tmp, then predicts honestly."""
    from lightbox.devtools import oci

    store = oci.BlobStore(images.cache_dir() / "blobs")
    manifest = json.loads(store.path(base.digest).read_bytes())
    config = json.loads(store.path(manifest["config"]["digest"]).read_bytes())
    made = oci.write_layer([oci.Entry("opt/writer.py", "file", 0o644, data=script)], tmp_path / "layer.tar.gz", 0)
    layer = store.put_file(tmp_path / "layer.tar.gz", oci.MEDIA_LAYER_GZIP)
    config["rootfs"]["diff_ids"].append(made.diff_id)
    config["config"]["Entrypoint"] = ["python", "/opt/writer.py"]
    config["config"].pop("Cmd", None)
    config_blob = store.put_bytes(oci.canonical_json(config), oci.MEDIA_CONFIG)
    manifest = {**manifest, "config": config_blob.descriptor(), "layers": [*manifest["layers"], layer.descriptor()]}
    manifest_blob = store.put_bytes(oci.canonical_json(manifest), oci.MEDIA_MANIFEST)
    oci.write_archive(store, manifest_blob, "localhost/lightbox-test-writer", "0", tmp_path / "writer.tar", 0)
    return tmp_path / "writer.tar"


def _both_modes(socket: Path, built: dict[str, images.BuiltImage], script: bytes, tmp_path: Path,
                **settings: object) -> tuple[int, str, int, str]:
    archive = _image_with_script(built["classifier"], script, tmp_path)
    out = io.StringIO()
    code = imagecheck.check_image(f"oci-archive:{archive}", [], vendorcheck.CheckSettings(cases=CASES, **settings),  # type: ignore[arg-type]
                                  runtime="ctr", containerd_address=socket, out=out)
    # the same script in command mode, from a folder the sandbox user can read
    shown = Path(tempfile.mkdtemp(prefix="lightbox-writer-"))
    try:
        shown.chmod(0o755)
        (shown / "writer.py").write_bytes(script)
        (shown / "writer.py").chmod(0o644)
        command_out = io.StringIO()
        command_code = vendorcheck.run_check([sys.executable, str(shown / "writer.py")],
                                             vendorcheck.CheckSettings(cases=CASES, expose=(shown,), **settings),  # type: ignore[arg-type]
                                             command_out)
    finally:
        shutil.rmtree(shown)
    return code, out.getvalue(), command_code, command_out.getvalue()


def test_writes_to_tmp_fail_with_command_modes_message(
    containerd: Path, built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    code, text, command_code, command_text = _both_modes(containerd, built, WRITER, tmp_path)
    assert code == command_code == vendorcheck.EXIT_NOT_CONFORMANT, (text, command_text)
    assert "tried to write outside the output directory: left 1 files in /tmp (4 KiB)" in text, text
    assert fail_lines(text) == fail_lines(command_text), (text, command_text)


FORKER = b"""import sys, threading, time
stop = threading.Event()
started = 0
try:
    for _ in range(400):
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
stop.set()
time.sleep(0.5)
from lightbox.sandbox.reference import classifier
sys.exit(classifier.main([]))
"""


def test_the_process_limit_holds_in_the_container(
    containerd: Path, built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    archive = _image_with_script(built["classifier"], FORKER, tmp_path)
    out = io.StringIO()
    code = imagecheck.check_image(
        f"oci-archive:{archive}",
        [],
        vendorcheck.CheckSettings(cases=CASES, max_processes=64),
        runtime="ctr",
        containerd_address=containerd,
        out=out,
    )
    text = out.getvalue()
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "reached the limit of 64 processes and threads (peak 64)" in text, text


def test_importing_an_image_again_points_its_tag_at_that_image(
    containerd: Path, built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    """A check skips the import of an image containerd already has by digest, and must then move the tag: two
    images under one name (two builds of a vendor's image), the first imported again, runs as the first."""
    import subprocess

    ctr = ["ctr", "--address", str(containerd), "--namespace", imagecheck.CTR_NAMESPACE]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = _image_with_script(built["classifier"], WRITER, tmp_path / "first")
    second = _image_with_script(built["classifier"], FORKER, tmp_path / "second")
    name = imagecheck.archive_image(first)[0]
    assert imagecheck.archive_image(second)[0] == name

    def target() -> str:
        listed = subprocess.run([*ctr, "images", "ls"], check=True, capture_output=True, text=True).stdout
        return {f[0]: f[2] for f in (line.split() for line in listed.splitlines()[1:]) if f}[name]

    for archive in (first, second, first):
        imagecheck.import_archive(ctr, archive, name)
        assert target() == imagecheck.archive_digest(archive), archive
    assert imagecheck.archive_digest(first) != imagecheck.archive_digest(second)

"""The Containerfiles of the MAP- and grand-challenge-shaped reference images parse with the
daemonless build's parser and are laid out as each packaging's spec says."""

from __future__ import annotations

from pathlib import Path

from lightbox.devtools import containerfile
from lightbox.sandbox.packaging_map import parse_manifests

ROOT = Path(__file__).resolve().parents[2]


def _parsed(name: str) -> dict[str, list[containerfile.Instruction]]:
    path = ROOT / "images" / "reference" / name / "Containerfile"
    by_keyword: dict[str, list[containerfile.Instruction]] = {}
    for ins in containerfile.parse(path.read_text(), path):
        by_keyword.setdefault(ins.keyword, []).append(ins)
    return by_keyword


def test_the_map_image_carries_its_manifests_where_the_spec_puts_them_and_runs_their_command():
    got = _parsed("map-segmenter")
    copies = {ins.args.split()[1]: ins.args.split()[0] for ins in got["COPY"]}
    assert set(copies) == {"/etc/holoscan/app.json", "/etc/holoscan/pkg.json"}
    manifest = parse_manifests(
        (ROOT / copies["/etc/holoscan/app.json"]).read_bytes(), (ROOT / copies["/etc/holoscan/pkg.json"]).read_bytes()
    )
    (entrypoint,) = got["ENTRYPOINT"]
    # the manifest and the Containerfile are written separately; they must name the same command
    assert containerfile.exec_form(entrypoint, "Containerfile") == manifest.command
    assert [u.args for u in got["USER"]] == ["65532:65532"]


def test_the_grand_challenge_image_has_no_manifest_of_ours_and_runs_as_the_pods_user():
    got = _parsed("gc-classifier")
    assert "COPY" not in got
    (entrypoint,) = got["ENTRYPOINT"]
    assert containerfile.exec_form(entrypoint, "Containerfile") == [
        "python",
        "-m",
        "lightbox.sandbox.reference.gc_classifier",
    ]
    assert [u.args for u in got["USER"]] == ["65532:65532"]

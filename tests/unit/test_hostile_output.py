"""The scorer and vendor check facing a hostile /output (issue 8): links, special files, deep
trees, deep or bloated JSON, huge files and compression bombs each end as MalformedPredictions
with a one-line reason naming the rule, bounded before anything is read or decompressed, never
a traceback, never a followed link, and nothing of the vendor's text in the message."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lightbox.api.run import EXIT_MALFORMED_PREDICTIONS, EXIT_OK, StagerConfig
from lightbox.sandbox import safeio, scorer, vendorcheck
from lightbox.sandbox.contract import MAX_PREDICTIONS_BYTES
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.reference import segmenter
from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.segfile import SegError, read_seg, write_seg
from lightbox.sandbox.stager import stage

MARKER = "ZZMARKER"  # in every vendor string below; it must never come back in a message
MEMORY_LIMIT = 768 << 20  # address space of the scorer under test: imports take about 160 MiB


class Run:
    """A staged segmentation run whose output the tests then make hostile."""

    def __init__(self, tmp: Path, n: int = 3) -> None:
        self.tmp = tmp
        self.sample = make_sample_dataset(tmp / "data", n_cases=n, seed=5, task="segmentation")
        self.input, self.output, self.work = tmp / "input", tmp / "output", tmp / "work"
        self.output.mkdir()
        stage(
            self.sample.studies_dir,
            self.input,
            self.work,
            StagerConfig(task="segmentation", labels=["lesion"], deid_options=self.sample.deid_options),
            verifier=verify_tree,
        )
        self.cases = json.loads((self.work / "cases.json").read_text())["cases"]
        self.env = {
            "LIGHTBOX_INPUT_DIR": str(self.input),
            "LIGHTBOX_OUTPUT_DIR": str(self.output),
            "LIGHTBOX_WORK_DIR": str(self.work),
            "LIGHTBOX_TRUTH_DIR": str(self.sample.truth_dir),
            "LIGHTBOX_TERMINATION_LOG": str(tmp / "term"),
            "LIGHTBOX_SCORER_CONFIG": json.dumps(
                {"task": "segmentation", "labels": ["lesion"], "bootstrap": {"resamples": 200}}
            ),
        }

    def honest(self, *argv: str) -> dict:
        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            segmenter.main(list(argv))
        finally:
            os.environ.clear()
            os.environ.update(old)
        return json.loads((self.output / "predictions.json").read_text())

    def write(self, doc: dict) -> None:
        (self.output / "predictions.json").write_text(json.dumps(doc))

    def first(self) -> str:
        return sorted(self.cases)[0]

    def score(self, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        code = scorer.main([])
        return code, json.loads((self.tmp / "term").read_text())

    def score_bounded(self) -> tuple[int, dict, str]:
        """The scorer in a child with MEMORY_LIMIT of address space and an empty TMPDIR."""
        tmpdir = self.tmp / "scorer-tmp"
        tmpdir.mkdir(exist_ok=True)
        code = (
            "import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
            "from lightbox.sandbox import scorer\n"
            "sys.exit(scorer.main([]))\n"
        )
        env = {**os.environ, **self.env, "TMPDIR": str(tmpdir), "OPENBLAS_NUM_THREADS": "1", "PYTHONSAFEPATH": "1"}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert not list(tmpdir.iterdir()), "the scorer left files in its temporary folder"
        term = (self.tmp / "term").read_text() if (self.tmp / "term").exists() else "{}"
        return proc.returncode, json.loads(term), proc.stderr


def _malformed(code: int, term: dict, fragment: str) -> str:
    assert code == EXIT_MALFORMED_PREDICTIONS, term
    assert term["reason"] == "MalformedPredictions", term
    message = term["message"]
    assert fragment in message and "\n" not in message and "Traceback" not in message, message
    assert MARKER not in message
    return message


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


# --- links and special files ---------------------------------------------------------------


def test_predictions_symlink_to_the_truth_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    (run.output / "predictions.json").symlink_to(run.sample.truth_dir / "labels.json")
    message = _malformed(*run.score(monkeypatch), "symbolic link")
    assert "abnormal" not in message and "normal" not in message


def test_mask_symlink_to_the_truth_is_refused_not_scored(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    truth_mask = run.sample.truth_dir / "masks" / f"{run.cases[run.first()]['source']}.npz"
    (run.output / "masks" / f"{MARKER}.npz").symlink_to(truth_mask)
    doc["cases"][run.first()]["mask"] = f"masks/{MARKER}.npz"
    run.write(doc)
    _malformed(*run.score(monkeypatch), "symbolic link")


def test_a_symlinked_folder_on_the_mask_path_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    (run.output / "truth").symlink_to(run.sample.truth_dir)
    doc["cases"][run.first()]["mask"] = f"truth/masks/{run.cases[run.first()]['source']}.npz"
    run.write(doc)
    _malformed(*run.score(monkeypatch), "a folder of its path is a symbolic link")


def test_hard_links_are_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    os.link(run.output / doc["cases"][run.first()]["mask"], run.output / "masks" / "again.npz")
    _malformed(*run.score(monkeypatch), "more than one hard link")


def test_a_fifo_is_refused_without_blocking(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(run.output / "predictions.json")  # opening it to read would wait for a writer forever
    _malformed(*run.score(monkeypatch), "is a FIFO")


def test_a_device_file_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(safeio.HostileOutput, match="is a device file"):
        safeio.read_regular(Path("/dev/zero"), "predictions.json", 1 << 20)
    try:
        os.mknod(run.output / "predictions.json", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        return  # no CAP_MKNOD here: the reader's refusal above is the same code path
    _malformed(*run.score(monkeypatch), "is a device file")


def test_a_deep_directory_tree_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    deep = run.output.joinpath(*[MARKER] * (safeio.MAX_PATH_DEPTH + 1))
    deep.mkdir(parents=True)
    (run.output / doc["cases"][run.first()]["mask"]).rename(deep / "m.npz")
    doc["cases"][run.first()]["mask"] = str((deep / "m.npz").relative_to(run.output))
    run.write(doc)
    _malformed(*run.score(monkeypatch), f"more than {safeio.MAX_PATH_DEPTH} folders deep")


def test_ordinary_path_mistakes_are_one_failed_case_not_a_refusal(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    ids = sorted(doc["cases"])
    doc["cases"][ids[0]]["mask"] = f"../data/truth/masks/{run.cases[ids[0]]['source']}.npz"
    doc["cases"][ids[1]]["mask"] = "/etc/passwd"
    doc["cases"][ids[2]]["mask"] = "masks/absent.npz"
    run.write(doc)
    code, term = run.score(monkeypatch)
    assert code == EXIT_OK and term["failures"]["unreadable"] >= 1 and term["scored"] == 0


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [safeio.MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_json_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    (run.output / "predictions.json").write_text('{"cases": {"' + MARKER + '": ' + nested + "}}")
    _malformed(*run.score(monkeypatch), "nested deeper than")


def test_a_huge_predictions_file_is_refused_unread(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(run.output / "predictions.json", "wb") as fh:
        fh.truncate(MAX_PREDICTIONS_BYTES + 1)  # sparse: the size alone must refuse it
    _malformed(*run.score(monkeypatch), f"larger than the limit of {MAX_PREDICTIONS_BYTES} bytes")


@pytest.mark.parametrize("suffix", [".npz", ".dcm"])
def test_a_huge_mask_is_refused_unread(run: Run, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    doc = run.honest()
    with open(run.output / "masks" / f"huge{suffix}", "wb") as fh:
        fh.truncate(64 << 20)  # sparse; far more than any mask of a 3-slice series needs
    doc["cases"][run.first()]["mask"] = f"masks/huge{suffix}"
    run.write(doc)
    _malformed(*run.score(monkeypatch), "larger than the limit of")


def test_json_that_would_parse_into_gigabytes_is_refused_in_bounded_memory(run: Run) -> None:
    # 16 MiB of "{}," parse into about 400 MiB of dicts; 40 MiB into about 1 GiB
    body = b"{}," * ((40 << 20) // 3)
    (run.output / "predictions.json").write_bytes(b'{"cases": {}, "x": [' + body + b"{}]}")
    code, term, stderr = run.score_bounded()
    _malformed(code, term, "objects and arrays")
    assert "MemoryError" not in stderr


# --- compression bombs ---------------------------------------------------------------------


def _npz_bomb(path: Path, nbytes: int) -> None:
    """An .npz whose one array inflates to ``nbytes`` (written in chunks: the test stays small)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)}
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("mask.npy", "w", force_zip64=True) as fh,
    ):
        np.lib.format.write_array_header_1_0(fh, header)
        chunk = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            fh.write(chunk)


def test_an_npz_bomb_is_refused_before_it_inflates(run: Run) -> None:
    doc = run.honest()
    _npz_bomb(run.output / "masks" / "bomb.npz", 512 << 20)  # about 0.5 MiB on disk
    assert (run.output / "masks" / "bomb.npz").stat().st_size < 1 << 20
    doc["cases"][run.first()]["mask"] = "masks/bomb.npz"
    run.write(doc)
    code, term, stderr = run.score_bounded()
    _malformed(code, term, "declares more bytes uncompressed")
    assert "MemoryError" not in stderr


def test_an_npz_whose_zip_directory_understates_its_size_is_one_unreadable_case(run: Run) -> None:
    doc = run.honest()
    path = run.output / "masks" / "liar.npz"
    _npz_bomb(path, 256 << 20)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("mask.npy")
    # overwrite the uncompressed size (32-bit fields and ZIP64 extras) in the local header and the
    # central directory, which lie in the first and last few hundred bytes
    head, tail = bytes(data[:256]), bytes(data[-1024:])
    for width in (8, 4):
        real, small = info.file_size.to_bytes(width, "little"), (1000).to_bytes(width, "little")
        head, tail = head.replace(real, small), tail.replace(real, small)
    assert head != bytes(data[:256]) and tail != bytes(data[-1024:])
    path.write_bytes(head + bytes(data[256:-1024]) + tail)
    doc["cases"][run.first()]["mask"] = "masks/liar.npz"
    run.write(doc)
    code, term, stderr = run.score_bounded()
    assert code == EXIT_OK, (term, stderr[-2000:])
    assert len(json.loads((run.work / "results.json").read_text())["failures"]["unreadable"]) == 1


def _seg_bytes(run: Run, case: str) -> bytes:
    info = run.cases[case]
    files = sorted((run.input / case / "00").glob("*.dcm"))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    mask = np.zeros(tuple(info["shape"]), bool)
    mask[:, 2:6, 2:6] = True
    path = run.tmp / "honest-seg.dcm"
    write_seg(mask, sources, path)
    return path.read_bytes()


def _deflated(seg: bytes, padding: int) -> bytes:
    """The same SEG in Deflated Explicit VR Little Endian, with ``padding`` zero bytes of dataset
    trailing padding (FFFC,FFFC) that inflate from almost nothing."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info

    fp = DicomBytesIO(seg)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    body = seg[fp.tell():]
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [out.getvalue(), packer.compress(body)]
    if padding:
        parts.append(packer.compress(b"\xfc\xff\xfc\xffOB\0\0" + padding.to_bytes(4, "little")))
        chunk = bytes(1 << 20)
        for _ in range(padding >> 20):
            parts.append(packer.compress(chunk))
    parts.append(packer.flush())
    return b"".join(parts)


def test_a_deflated_seg_reads_as_the_same_mask(run: Run) -> None:
    case = run.first()
    seg = _seg_bytes(run, case)
    info = run.cases[case]
    plain = read_seg(seg, info["sopInstanceUids"], tuple(info["shape"]))
    assert plain.sum() == info["shape"][0] * 16
    assert np.array_equal(read_seg(_deflated(seg, 0), info["sopInstanceUids"], tuple(info["shape"])), plain)


def test_a_deflated_seg_bomb_is_refused_before_it_inflates(run: Run) -> None:
    doc = run.honest()
    bomb = _deflated(_seg_bytes(run, run.first()), 512 << 20)
    assert len(bomb) < 1 << 20
    (run.output / "masks" / "bomb.dcm").write_bytes(bomb)
    doc["cases"][run.first()]["mask"] = "masks/bomb.dcm"
    run.write(doc)
    code, term, stderr = run.score_bounded()
    _malformed(code, term, "inflates past")
    assert "MemoryError" not in stderr


def test_a_seg_with_a_bloated_header_is_refused_before_parsing(run: Run) -> None:
    doc = run.honest()
    case = run.first()
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_seg_bytes(run, case)))
    # many small private elements: a few bytes each on disk, hundreds of bytes each once parsed
    block = pydicom.Dataset()
    for i in range(0x10, 0xFF):
        block.add_new((0x0029, 0x1000 + i), "LO", MARKER)
    ds.PerFrameFunctionalGroupsSequence[0].update(block)
    item = ds.PerFrameFunctionalGroupsSequence[0]
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([item] + [pydicom.Dataset(item) for _ in range(100)])
    ds.NumberOfFrames = len(ds.PerFrameFunctionalGroupsSequence)
    ds.save_as(run.output / "masks" / "bloat.dcm")
    doc["cases"][case]["mask"] = "masks/bloat.dcm"
    run.write(doc)
    code, term, _ = run.score_bounded()
    _malformed(code, term, "more header before Pixel Data")


def test_seg_readers_bound_frames_and_pixels() -> None:
    from lightbox.sandbox.segfile import MAX_SEG_PIXELS, seg_limits

    small = seg_limits((3, 64, 64))
    assert small.frames == 3 * 64 and small.pixels == 3 * 64 * 64 * 64
    assert seg_limits((4000, 512, 512)).pixels == MAX_SEG_PIXELS
    with pytest.raises(SegError):
        read_seg(b"\0" * 132, ["1"], (1, 2, 2))


# --- vendor check uses the same readers -----------------------------------------------------


def test_vendor_check_refuses_the_same_hostile_files(run: Run) -> None:
    manifest = json.loads((run.input / "manifest.json").read_text())
    doc = run.honest()
    _npz_bomb(run.output / "masks" / "bomb.npz", 256 << 20)
    ids = sorted(doc["cases"])
    doc["cases"][ids[0]]["mask"] = "masks/bomb.npz"
    (run.output / "masks" / "link.npz").symlink_to(
        run.sample.truth_dir / "masks" / f"{run.cases[ids[1]]['source']}.npz"
    )
    doc["cases"][ids[1]]["mask"] = "masks/link.npz"
    run.write(doc)
    verdict = vendorcheck.Verdict()
    vendorcheck.check_predictions(run.output, manifest, "segmentation", verdict, run.work)
    text = "\n".join(verdict.problems)
    assert "declares 268435" in text and "symbolic link" in text, text
    (run.output / "predictions.json").unlink()
    (run.output / "predictions.json").symlink_to(run.sample.truth_dir / "labels.json")
    verdict = vendorcheck.Verdict()
    assert vendorcheck.check_predictions(run.output, manifest, "segmentation", verdict, run.work) is None
    assert any("symbolic link" in p for p in verdict.problems), verdict.problems


def test_vendor_check_reports_deep_json_instead_of_crashing(run: Run) -> None:
    manifest = json.loads((run.input / "manifest.json").read_text())
    (run.output / "predictions.json").write_text('{"cases": ' + "[" * 50_000 + "]" * 50_000 + "}")
    verdict = vendorcheck.Verdict()
    assert vendorcheck.check_predictions(run.output, manifest, "segmentation", verdict, run.work) is None
    assert any("nested deeper than" in p for p in verdict.problems), verdict.problems


# --- the vendor's text never comes back -----------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"cases": {"' + MARKER + '": ',  # broken JSON
        '{"task": "' + MARKER + '", "cases": {}}',
        '{"contractVersion": "' + MARKER + '", "cases": {}}',
        '["' + MARKER + '"]',
        '{"cases": "' + MARKER + '"}',
    ],
)
def test_no_vendor_text_in_refusals(run: Run, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    (run.output / "predictions.json").write_text(content)
    code, term = run.score(monkeypatch)
    assert code == EXIT_MALFORMED_PREDICTIONS
    assert MARKER not in json.dumps(term)
    assert "line" not in term["message"]  # no position: a number the vendor chose


def test_no_vendor_text_or_choices_in_a_report(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = run.honest()
    doc[MARKER] = MARKER
    doc["cases"][MARKER] = {"mask": f"masks/{MARKER}.npz"}
    for entry in doc["cases"].values():
        entry["note"] = MARKER
    run.write(doc)
    code, term = run.score(monkeypatch)
    assert code == EXIT_OK
    assert MARKER not in json.dumps(term)
    assert not any(case in json.dumps(term) for case in run.cases)

"""The photo corpus of ``bench/deid.py --photos N``: ``lightbox deid --format photo`` against
``cp -r`` (the floor) and a reference from PyPI, a Pillow re-save without metadata (what a
script written in a hurry does: decode, encode again, pass no EXIF), measured in the same run.

exiftool (``exiftool -all=``) is the usual tool but it is Perl, not on PyPI; it runs only when
it is on PATH.

The corpus: N photos in folders of 4 per case, 70% JPEG, 20% PNG, 10% HEIC, each with the
planted metadata of tests/unit/photo_samples.py (GPS, dates, serials, owner, MakerNote, IFD1
thumbnail, XMP, IPTC, comment, ICC device text). Each output is byte-searched for the planted
values ("leaks"), and decoded: "same pixels" counts outputs whose decoded pixels equal those of
some source (a re-encoded JPEG does not).
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import photo_samples as ps  # noqa: E402  (test helpers: piexif, from the test extra)

PILLOW_DRIVER = """
import sys, os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from PIL import Image
import pillow_heif
pillow_heif.register_heif_opener()
src, dst, jobs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def one(path):
    rel = path.relative_to(src)
    target = (dst / rel).with_suffix(".png" if path.suffix.lower() in (".png", ".heic") else ".jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        if target.suffix == ".jpg":
            im.save(target, "JPEG", quality=95)
        else:
            im.save(target, "PNG")
paths = sorted(p for p in src.rglob("*") if p.is_file() and p.name != "cohort.csv")
with ProcessPoolExecutor(jobs) as pool:
    list(pool.map(one, paths, chunksize=8))
"""


@dataclass
class Result:
    name: str
    seconds: float | None = None
    cpu: float | None = None
    files_out: int = 0
    leaks: dict[str, int] = field(default_factory=dict)
    same_pixels: int = 0
    note: str = ""


def generate(corpus: Path, n: int, size: tuple[int, int]) -> None:
    """A few distinct photos per format, cloned byte for byte (generation is not what is timed)."""
    kinds = [("jpg", ps.planted_jpeg)] * 7 + [("png", ps.planted_png)] * 2 + [("heic", ps.planted_heic)]
    made: dict[tuple[str, int], bytes] = {}
    for i in range(n):
        suffix, make = kinds[i % len(kinds)]
        seed = i % 3
        if (suffix, seed) not in made:
            made[(suffix, seed)] = make(seed=seed, size=size)
        folder = corpus / f"Patient_{i // 4:04d}_MRN{100000 + i // 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{i:05d}.{suffix}").write_bytes(made[(suffix, seed)])
    cases = sorted(p.name for p in corpus.iterdir())
    rows = ["case,bodySite,skinType"] + [f"{c},lower extremity,{('I', 'III', 'V')[k % 3]}" for k, c in enumerate(cases)]
    (corpus / "cohort.csv").write_text("\n".join(rows) + "\n")


def _pixels(data: bytes) -> bytes:
    from PIL import Image

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        with Image.open(io.BytesIO(data)) as im:
            return hashlib.sha256(im.convert("RGB").tobytes()).digest()
    except Exception:  # noqa: BLE001 - not an image (cohort.csv, a failed output): no pixels
        return b""


def measure(out: Path, source_pixels: set[bytes], result: Result) -> None:
    result.leaks = dict.fromkeys(ps.PLANTED, 0)
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "cohort.csv"):
        data = path.read_bytes()
        result.files_out += 1
        for name, value in ps.PLANTED.items():
            result.leaks[name] += value in data
        result.same_pixels += _pixels(data) in source_pixels


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Wall and CPU seconds (user + system of the tool and its workers: on a shared machine the
    CPU time is the steadier measure of the work done)."""
    os.sync()
    start, cpu = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd="/")
    return time.perf_counter() - start, _cpu() - cpu, proc


def run(work: Path, n: int, jobs: int, repeat: int, size: tuple[int, int]) -> int:
    corpus = work / "photo-corpus"
    t = time.perf_counter()
    generate(corpus, n, size)
    mb = sum(p.stat().st_size for p in corpus.rglob("*")) / 1e6
    print(f"photo corpus: {n} photos {size[0]}x{size[1]} (70% JPEG, 20% PNG, 10% HEIC), {mb:.0f} MB, "
          f"generated in {time.perf_counter() - t:.1f}s")
    print(f"machine: {os.cpu_count()} cores; tools run with {jobs} processes\n", flush=True)
    key = work / "photo-key"
    key.write_bytes(os.urandom(32).hex().encode())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    tools = {
        "cp -r": lambda out: ["cp", "-r", str(corpus), str(out)],
        "lightbox deid": lambda out: [sys.executable, "-m", "lightbox.cli", "deid", "--format", "photo", str(corpus),
                                      str(out), "--key-file", str(key), "--jobs", str(jobs), "--no-progress"],
        "Pillow re-save": lambda out: [sys.executable, "-c", PILLOW_DRIVER, str(corpus), str(out), str(jobs)],
    }
    if shutil.which("exiftool"):
        script = "cp -r {0} {1} && exiftool -q -all= -overwrite_original -r {1}"
        tools["exiftool -all="] = lambda out: ["sh", "-c", script.format(corpus, out)]
    results = {name: Result(name) for name in tools}
    runs: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(repeat):  # interleaved: the machine is shared, the best run of each counts
        for name, cmd in tools.items():
            out = work / f"out-{name.split()[0].lower()}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, cpu, proc = _timed(cmd(out), env)
            r = results[name]
            if proc.returncode != 0:
                r.note = proc.stderr.decode()[-300:].strip()
                continue
            runs[name].append(seconds)
            if r.seconds is None or seconds < r.seconds:
                r.seconds = seconds
            if r.cpu is None or cpu < r.cpu:
                r.cpu = cpu
    source_pixels = {_pixels(p.read_bytes()) for p in corpus.rglob("*") if p.is_file()} - {b""}
    for name, r in results.items():
        measure(work / f"out-{name.split()[0].lower()}", source_pixels, r)
    floor, ours = results["cp -r"].seconds, results["lightbox deid"].seconds
    ours_cpu = results["lightbox deid"].cpu
    print(f"times: best of {repeat}, interleaved; outputs byte-searched for {len(ps.PLANTED)} planted values\n")
    print(f"{'tool':<16} {'seconds':>8} {'cpu s':>7} {'photos/s':>9} {'x cp -r':>8} {'x lightbox':>11} "
          f"{'cpu x lightbox':>15}  files  leaks  same pixels")
    for r in results.values():
        if r.seconds is None or r.cpu is None:
            print(f"{r.name:<16} {'-':>8}  failed: {r.note}")
            continue
        leaked = {k: v for k, v in r.leaks.items() if v}
        vs_cp = f"{r.seconds / floor:.2f}" if floor else "-"
        vs_us = f"{r.seconds / ours:.2f}" if ours else "-"
        cpu_us = f"{r.cpu / ours_cpu:.2f}" if ours_cpu else "-"
        print(f"{r.name:<16} {r.seconds:>8.2f} {r.cpu:>7.2f} {n / r.seconds:>9.0f} {vs_cp:>8} {vs_us:>11} "
              f"{cpu_us:>15}  {r.files_out:>5}  {sum(leaked.values()):>5}  {r.same_pixels:>5}")
        if r.name != "cp -r" and leaked:
            print(f"{'':<16} left: " + ", ".join(f"{k} in {v} files" for k, v in leaked.items()))
    for name, times in runs.items():
        print(f"{name} runs (s): {' '.join(f'{s:.2f}' for s in times)}")
    ref, ref_cpu = results["Pillow re-save"].seconds, results["Pillow re-save"].cpu
    if ours and ref and ours_cpu and ref_cpu:
        print(f"\nPillow re-save / lightbox deid = {ref / ours:.2f} wall, {ref_cpu / ours_cpu:.2f} CPU")
    lb = results["lightbox deid"]
    return 0 if lb.seconds is not None and not any(lb.leaks.values()) and lb.same_pixels == lb.files_out else 1

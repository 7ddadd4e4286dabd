"""Benchmark ``lightbox deid`` on whole-slide TIFF against ``cp -r`` and a tifffile rewrite.

    .venv/bin/python bench/deid.py slides [--slides 4 --side 20000 --big-side 40000]

Two corpora, generated with tifffile (repeated tiles, so writing them is quick):

* ``slides``: ``--slides`` Aperio-like SVS files, ``--side`` px square baseline of JPEG tiles
  (512x512), two more levels, a thumbnail, a label page with a drawn name, a macro page, a
  description with Filename/User/Barcode/ScanScope ID, a private tag with an id;
* ``big``: one slide of ``--big-side`` px square, uncompressed 512x512 RGB tiles (40,000 px:
  4.8 GB), the same identifying parts: the bounded-memory case.

Tools, each in its own process, timed and with its peak resident memory (``ru_maxrss`` of
the command, reported by GNU time): ``cp -r`` (the floor), ``lightbox deid``, and the reference a
tifffile user would write: every kept page decoded (``page.asarray()``) and written again
with the same tiling and compression (``TiffWriter.write``), the label and macro pages
left out. The reference runs on the ``slides`` corpus only (decoding the big slide needs its
4.8 GB in memory). Every output is byte-searched for the planted values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PLANTED = {
    "filename": b"LEAKFILE-S12-3456",
    "user": b"LEAKUSER",
    "barcode": b"LEAKBARCODE-778899",
    "scanner id": b"LEAKSCANNER",
    "private tag": b"LEAKPRIVATE-PID",
    "artist": b"LEAKARTIST",
}
TILE = 512

REFERENCE_DRIVER = r"""
import sys, tifffile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.rglob("*.svs")):
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffFile(path) as tif, tifffile.TiffWriter(out, bigtiff=tif.is_bigtiff) as w:
        for page in tif.pages:
            if "label" in page.description or "macro" in page.description:
                continue
            kw = dict(tile=(page.tilelength, page.tilewidth)) if page.is_tiled else {}
            w.write(page.asarray(), photometric=page.photometric, compression=page.compression, metadata=None,
                    software=False, **kw)
"""


@dataclass
class Run:
    tool: str
    corpus: str
    seconds: float | None = None
    max_rss_mb: float | None = None
    leaks: int = 0
    note: str = ""


def _label() -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(image).text((30, 180), "LEAKLABEL JANE DOE", fill="black")
    return np.asarray(image)


def _extratags() -> list[tuple[int, str, int, str, bool]]:
    return [(65000, "s", 0, PLANTED["private tag"].decode(), True), (315, "s", 0, PLANTED["artist"].decode(), True)]


def _description(side: int) -> str:
    return (
        f"Aperio Image Library v12.0.15\r\n{side}x{side} (512x512) JPEG/RGB Q=70|AppMag = 40|MPP = 0.2500"
        f"|Filename = {PLANTED['filename'].decode()}|User = {PLANTED['user'].decode()}"
        f"|Barcode = {PLANTED['barcode'].decode()}|ScanScope ID = {PLANTED['scanner id'].decode()}"
    )


def write_slide(path: Path, side: int, compressed: bool) -> None:
    """A pyramid of repeated tiles (levels /1, /4, /16), thumbnail, label and macro."""
    import imagecodecs
    import tifffile

    rng = np.random.default_rng(side)
    distinct = [rng.integers(0, 255, (TILE, TILE, 3), dtype=np.uint8) for _ in range(4)]
    if compressed:
        encoded = [imagecodecs.jpeg8_encode(t, level=80) for t in distinct]
        chunks, options = encoded, {"compression": "jpeg", "photometric": "ycbcr", "subsampling": (2, 2)}
    else:
        chunks, options = [t.tobytes() for t in distinct], {"photometric": "rgb"}

    def tiles(level_side: int):  # type: ignore[no-untyped-def]
        n = ((level_side + TILE - 1) // TILE) ** 2
        return (chunks[i % len(chunks)] for i in range(n))

    big = side * side * 3 > (3 << 30)
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        for i, level_side in enumerate((side, side // 4, side // 16)):
            tif.write(
                tiles(level_side),
                shape=(level_side, level_side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                description=_description(side)
                if i == 0
                else f"Aperio Image Library\r\n{side}x{side} -> {level_side}x{level_side}",
                metadata=None,
                software=False,
                extratags=_extratags() if i == 0 else None,
                **options,
            )
            if i == 0:
                tif.write(
                    distinct[0][::4, ::4],
                    photometric="rgb",
                    metadata=None,
                    software=False,
                    description=f"Aperio Image Library\r\n{side}x{side} -> 128x128",
                )
        tif.write(
            _label(),
            photometric="rgb",
            subfiletype=1,
            metadata=None,
            software=False,
            description="Aperio Image Library\r\nlabel 600x400",
        )
        tif.write(
            distinct[1][:200],
            photometric="rgb",
            subfiletype=9,
            metadata=None,
            software=False,
            description="Aperio Image Library\r\nmacro 512x200",
        )


def _label_marker() -> bytes:
    return _label()[170:200].tobytes()[:4096]


def count_leaks(out: Path) -> int:
    """Planted values (and the label's pixel rows) found in the output's files."""
    needles = [*PLANTED.values(), _label_marker()]
    found = 0
    for path in (p for p in out.rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            tail = b""
            hits: set[bytes] = set()
            while chunk := fh.read(64 << 20):
                window = tail + chunk
                hits.update(n for n in needles if n in window)
                tail = window[-8192:]
        found += len(hits)
    return found


GNU_TIME = "/usr/bin/time"


def timed(cmd: list[str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS MB, exit status, stderr tail) of one command.

    The peak comes from GNU time (``%M``, the command's own ru_maxrss): a child forked from
    this Python process would report this process's resident size as its floor."""
    import subprocess

    rss_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-rss-{os.getpid()}"
    wrapped = [GNU_TIME, "-o", str(rss_file), "-f", "%M", *cmd] if os.path.exists(GNU_TIME) else cmd
    start = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    rss = float(rss_file.read_text().split()[-1]) / 1024 if wrapped is not cmd and rss_file.exists() else float("nan")
    rss_file.unlink(missing_ok=True)
    return seconds, rss, proc.returncode, proc.stderr.decode()[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--side", type=int, default=20000, help="baseline size of the slides corpus (px)")
    ap.add_argument("--big-side", type=int, default=40000, help="baseline size of the big slide (px), 0: none")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lightbox-deid-bench-slides"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    key = work / "key"
    work.mkdir(parents=True)
    key.write_bytes(os.urandom(32).hex().encode())
    corpora: dict[str, Path] = {}
    t = time.perf_counter()
    corpora["slides"] = work / "slides"
    for i in range(args.slides):
        folder = corpora["slides"] / f"case-{i}"
        folder.mkdir(parents=True)
        write_slide(folder / f"{PLANTED['filename'].decode()}-{i}.svs", args.side, compressed=True)
    if args.big_side:
        corpora["big"] = work / "big"
        (corpora["big"] / "case").mkdir(parents=True)
        write_slide(corpora["big"] / "case" / "big.svs", args.big_side, compressed=False)
    for name, path in corpora.items():
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"corpus {name}: {sum(1 for _ in path.rglob('*.svs'))} slide(s), {size / 1e9:.2f} GB")
    print(f"generated in {time.perf_counter() - t:.0f}s; machine: {os.cpu_count()} cores\n", flush=True)

    env_python = sys.executable
    tools = {
        "cp -r": lambda src, out: ["cp", "-r", str(src), str(out)],
        "lightbox deid": lambda src, out: [
            env_python,
            "-m",
            "lightbox.cli",
            "deid",
            str(src),
            str(out),
            "--key-file",
            str(key),
            "--jobs",
            "1",
            "--no-progress",
        ],
        "tifffile rewrite": lambda src, out: [env_python, "-c", REFERENCE_DRIVER, str(src), str(out)],
    }
    runs: list[Run] = []
    for corpus, src in corpora.items():
        for tool, make in tools.items():
            if tool == "tifffile rewrite" and corpus == "big":
                runs.append(Run(tool, corpus, note="not run: decoding the baseline needs it whole in memory"))
                continue
            out = work / f"out-{corpus}-{tool.split()[0]}"
            os.sync()
            seconds, rss, code, err = timed(make(src, out))
            run = Run(tool, corpus, seconds if code == 0 else None, rss, note="" if code == 0 else err)
            if out.exists():
                run.leaks = count_leaks(out)
            runs.append(run)
            shutil.rmtree(out, ignore_errors=True)

    print(f"{'corpus':<7} {'tool':<17} {'seconds':>8} {'x cp -r':>8} {'peak RSS MB':>12} {'leaks':>6}")
    for corpus in corpora:
        floor = next((r.seconds for r in runs if r.corpus == corpus and r.tool == "cp -r"), None)
        for r in (r for r in runs if r.corpus == corpus):
            if r.seconds is None:
                print(f"{corpus:<7} {r.tool:<17} {'-':>8}  {r.note}")
                continue
            ratio = f"{r.seconds / floor:.2f}" if floor else "-"
            print(f"{corpus:<7} {r.tool:<17} {r.seconds:>8.2f} {ratio:>8} {r.max_rss_mb:>12.0f} {r.leaks:>6}")
    ours = {r.corpus: r for r in runs if r.tool == "lightbox deid"}
    ref = next((r for r in runs if r.tool == "tifffile rewrite" and r.seconds), None)
    if ref and ours["slides"].seconds:
        print(
            f"\ntifffile rewrite / lightbox deid (slides): time {ref.seconds / ours['slides'].seconds:.1f}, "
            f"peak memory {ref.max_rss_mb / ours['slides'].max_rss_mb:.1f}"
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.seconds is not None and r.leaks == 0 for r in ours.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Misbehaving algorithms, one per mode, to show each is contained or rejected.

    python -m lightbox.sandbox.reference.misbehave MODE

Modes (also read from LIGHTBOX_MISBEHAVE when no argument is given):

* ``network``    phones home (DNS lookup, TCP and UDP to public addresses), then predicts honestly
* ``read-truth`` reads the ground truth ($LIGHTBOX_TRUTH_DIR or /data/truth) to predict perfectly;
                 without it, gives up with exit code 1
* ``flood``      writes without end to /output and to stdout
* ``hang``       predicts honestly, then never exits
* ``hog``        holds ever more memory (up to 1 GiB, in 32 MiB steps), then predicts honestly
* ``malformed``  writes predictions.json that is not JSON
* ``schema``     writes JSON with missing cases and out-of-range scores
* ``leak-phi``   prints each case's patient attributes and UIDs to stdout, then predicts honestly
* ``tamper``     tries to modify /input and to undo the sandbox's mounts, then predicts honestly
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from lightbox.sandbox.reference import classifier
from lightbox.sandbox.reference._common import input_dir, load_manifest, output_dir, write_predictions

MODES = ("network", "read-truth", "flood", "hang", "hog", "malformed", "schema", "leak-phi", "tamper")


def _network() -> None:
    attempts = [
        lambda: socket.getaddrinfo("updates.example.com", 443),
        lambda: socket.create_connection(("93.184.216.34", 443), timeout=2),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"telemetry", ("8.8.8.8", 53)),
        lambda: socket.create_connection(("2606:4700:4700::1111", 443), timeout=2),
    ]
    for attempt in attempts:
        try:
            attempt()
            print("network attempt succeeded", file=sys.stderr)
        except OSError as exc:
            print(f"network attempt failed: {exc}", file=sys.stderr)
    classifier.main([])


def _read_truth() -> int:
    truth = Path(os.environ.get("LIGHTBOX_TRUTH_DIR", "/data/truth")) / "labels.json"
    try:
        labels = json.loads(truth.read_text())
    except OSError as exc:
        print(f"cannot read ground truth at {truth}: {exc.strerror}", file=sys.stderr)
        return 1
    cases = {}
    manifest = load_manifest()
    for i, case in enumerate(manifest["cases"]):
        # the cheat guesses that staged case order follows the truth's sorted keys
        keys = sorted(labels)
        truth_label = labels[keys[i]]["label"] if i < len(keys) else "normal"
        p = 1.0 if truth_label == "abnormal" else 0.0
        cases[case["id"]] = {"scores": {"abnormal": p, "normal": 1 - p}}
    write_predictions("classification", cases)
    return 0


def _flood() -> None:
    chunk = b"\0" * (1 << 20)
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "flood.bin", "wb") as fh:
        for _ in range(1 << 20):
            fh.write(chunk)
            sys.stdout.buffer.write(b"x" * 65536)


def _hang() -> None:
    classifier.main([])
    while True:
        time.sleep(3600)


def _hog() -> None:
    held = []
    for _ in range(32):  # 1 GiB: past any limit the tests set, small enough for a CI machine
        held.append(b"\x01" * (32 << 20))  # written, so resident
        time.sleep(0.05)
    del held
    classifier.main([])


def _malformed() -> None:
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(
        '{"contractVersion": "v1", "task": "classification", "cases": {"a": {"scores": '
    )


def _schema() -> None:
    manifest = load_manifest()
    cases = {}
    for i, case in enumerate(manifest["cases"][: len(manifest["cases"]) // 2]):
        cases[case["id"]] = {"scores": {"abnormal": 1.7 if i == 0 else 0.4}} if i != 1 else {"score": 0.4}
    write_predictions("classification", cases)


def _leak_phi() -> None:
    import pydicom

    manifest = load_manifest()
    for case in manifest["cases"]:
        ds = pydicom.dcmread(input_dir() / case["series"][0]["files"][0], stop_before_pixels=True)
        print(
            f"case {case['id']}: patient {ds.PatientID} sex {ds.get('PatientSex')} age {ds.get('PatientAge')} study "
            f"{ds.StudyInstanceUID}"
        )
    classifier.main([])


def _tamper() -> None:
    try:
        (input_dir() / "manifest.json").write_text("{}")
        print("wrote into the input", file=sys.stderr)
    except OSError as exc:
        print(f"input write failed: {exc.strerror}", file=sys.stderr)
    for cmd in (["mount", "-o", "remount,rw", str(input_dir())], ["umount", "-l", str(input_dir())]):
        rc = subprocess.run(cmd, capture_output=True).returncode
        print(f"{' '.join(cmd[:2])}: exit {rc}", file=sys.stderr)
    classifier.main([])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args[0] if args else os.environ.get("LIGHTBOX_MISBEHAVE", "")
    if mode not in MODES:
        print(f"usage: misbehave {{{','.join(MODES)}}}", file=sys.stderr)
        return 2
    if mode == "read-truth":
        return _read_truth()
    {"network": _network, "flood": _flood, "hang": _hang, "hog": _hog, "malformed": _malformed, "schema": _schema,
     "leak-phi": _leak_phi, "tamper": _tamper}[mode]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

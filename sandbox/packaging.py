"""Packagings vendors already have: a MONAI Application Package (MAP) and a grand-challenge
algorithm container, run unchanged in the same sandbox as Lightbox's own contract
(docs/packaging.md).

Both expect one case per invocation, so a run pod starts the vendor's image once per case, one
init container after the other (``vendor-0001``, ...), each with only its case's input folder
mounted read-only and its own output folder: the image's entry point runs as it would on its
own platform, nothing is injected into it, and no case sees another's input or output. Every
container keeps the ``lightbox`` packaging's security context.

* ``monai-map``: the case's DICOM files side by side in one folder; the folders are named by
  ``HOLOSCAN_INPUT_PATH``/``HOLOSCAN_OUTPUT_PATH`` (MAP spec 1.0) and ``MONAI_INPUTPATH``/
  ``MONAI_OUTPUTPATH`` (0.1). Results: a DICOM SEG (segmentation), a JSON file or a DICOM SR
  (classification), a DICOM SR with SCOORD points (detection); packaging_sr.py says which SRs.
* ``grand-challenge``: ``/input/inputs.json`` and the case's first series as a MetaImage at
  ``/input/images/generic-medical-image/<uuid>.mha``. Results: ``/output/*.json`` (a number, a
  one-element list or an object of label scores for classification; a "Multiple points" object,
  in millimetres, for detection) or ``/output/images/<slug>/<name>.mha`` (segmentation).

Pure pieces (naming, environment, reading a case's output into the contract's predictions) and
the stage step's layout, a thin shell over the files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightbox.api.run import INPUT_DIR_ENV, OUTPUT_DIR_ENV
from lightbox.sandbox import safeio
from lightbox.sandbox.packaging_sr import MAX_SR_BYTES, SR_SOP_CLASSES, sr_findings, sr_score

if TYPE_CHECKING:  # numpy and the image writers are imported where used: the operator loads this
    import numpy as np  # module for its pod specs and never needs them

LIGHTBOX, MAP, GRAND_CHALLENGE = "lightbox", "monai-map", "grand-challenge"
PER_CASE = (MAP, GRAND_CHALLENGE)
# One init container per case: a pod object holds a few hundred before it nears the API
# server's size limit; a larger dataset is refused with this number rather than half-built.
MAX_CASES_PER_POD = 300
VENDOR_CONTAINER_PREFIX = "vendor-"
# What a MAP reads its folders from (MAP spec 1.0 and 0.1): the host sets them, the app obeys.
MAP_PATH_VARIABLES = {
    "input": ("HOLOSCAN_INPUT_PATH", "MONAI_INPUTPATH"),
    "output": ("HOLOSCAN_OUTPUT_PATH", "MONAI_OUTPUTPATH"),
    "work": ("HOLOSCAN_WORKDIR", "MONAI_WORKDIR", "HOLOSCAN_LOGS"),
}
GC_INTERFACE = {
    "slug": "generic-medical-image",
    "kind": "Image",
    "super_kind": "Image",
    "relative_path": "images/generic-medical-image",
}
GC_INPUTS_FILE = "inputs.json"
MAX_RESULT_JSON_BYTES = 1 << 20
MAX_SCANNED_ENTRIES = 4096
MAX_SCAN_DEPTH = 4
SEG_SOP_CLASS = b"1.2.840.10008.5.1.4.1.1.66.4"
MAX_POINTS = 1000  # the contract's findings per case


def runs_per_case(packaging: str) -> bool:
    return packaging in PER_CASE


# Which Dataset formats each packaging can be given: MAP and grand-challenge inputs are laid
# out from DICOM series (a MAP's DICOM folder, a grand-challenge MetaImage volume); a slide
# TIFF or a photo has no series to lay out, and neither spec says how such an app reads one.
FORMATS_BY_PACKAGING = {LIGHTBOX: ("dicom", "slide-tiff", "photo"), MAP: ("dicom",), GRAND_CHALLENGE: ("dicom",)}


def format_refusal(packaging: str, dataset_format: str) -> str | None:
    """Why an Algorithm of ``packaging`` cannot run on a Dataset of ``dataset_format``, or None.
    Checked by the operator before any pod (admission) and again by the stage step."""
    allowed = FORMATS_BY_PACKAGING.get(packaging, ())
    if dataset_format in allowed:
        return None
    takes = [p for p, formats in FORMATS_BY_PACKAGING.items() if dataset_format in formats]
    return (
        f"Algorithm spec.packaging {packaging!r} takes Dataset spec.format {' or '.join(map(repr, allowed))} only "
        f"(its input is laid out from DICOM series); a Dataset of spec.format {dataset_format!r} needs spec.packaging "
        f"{' or '.join(map(repr, takes))}"
    )


def vendor_container_name(index: int) -> str:
    return f"{VENDOR_CONTAINER_PREFIX}{index:04d}"


def case_id(index: int, cases: int) -> str:
    """The stage step's case id of the ``index``-th case (1-based) of ``cases``."""
    return f"case-{index:0{max(4, len(str(cases)))}d}"


def vendor_environment(packaging: str, input_dir: str, output_dir: str) -> dict[str, str]:
    """What a per-case packaging's container gets from Lightbox: its folders, and HOME/TMPDIR in
    the only writable place, as the contract's containers do (the root file system is read-only)."""
    # The contract's two folder variables too: a real MAP or grand-challenge image ignores them, and
    # the development runner, which cannot mount at fixed paths, points them at the case's folders.
    env = {INPUT_DIR_ENV: input_dir, OUTPUT_DIR_ENV: output_dir, "HOME": output_dir, "TMPDIR": output_dir}
    if packaging == MAP:
        for name in MAP_PATH_VARIABLES["input"]:
            env[name] = input_dir
        for name in MAP_PATH_VARIABLES["output"] + MAP_PATH_VARIABLES["work"]:
            env[name] = output_dir
    return env


def per_case_containers(
    vendor: Mapping[str, Any], packaging: str, cases: int, input_dir: str, output_dir: str
) -> list[dict[str, Any]]:
    """``vendor`` (the ``lightbox`` packaging's container) once per case: the same image, security
    context and resources, the input volume's case folder read-only at ``input_dir`` and the output
    volume's case folder at ``output_dir``, the packaging's environment."""
    if not 1 <= cases <= MAX_CASES_PER_POD:
        raise ValueError(
            f"packaging {packaging} runs the image once per case, in one pod: {cases} cases is outside "
            f"1..{MAX_CASES_PER_POD}; "
            "split the dataset or set a smaller maximum of cases"
        )
    mounts = {m["mountPath"]: m for m in vendor["volumeMounts"]}
    input_volume, output_volume = mounts[input_dir]["name"], mounts[output_dir]["name"]
    kept_env = [e for e in vendor.get("env") or [] if e["name"] == "NVIDIA_VISIBLE_DEVICES"]
    out: list[dict[str, Any]] = []
    for index in range(1, cases + 1):
        case = case_id(index, cases)
        container = json.loads(json.dumps(vendor))
        container["name"] = vendor_container_name(index)
        container["env"] = [
            {"name": k, "value": v} for k, v in vendor_environment(packaging, input_dir, output_dir).items()
        ] + kept_env
        container["volumeMounts"] = [
            {"name": input_volume, "mountPath": input_dir, "readOnly": True, "subPath": case},
            {"name": output_volume, "mountPath": output_dir, "readOnly": False, "subPath": case},
        ]
        out.append(container)
    return out


# --- stage: the vendor's input, one folder per case ----------------------------------------


def _volume(files: Sequence[Path]) -> np.ndarray:
    """The series' pixels in slice order, in modality units (rescale applied)."""
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_rescale

    slices = [np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float64) for ds in map(pydicom.dcmread, files)]
    volume = np.stack(slices)
    if np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def _flatten_map_case(case_dir: Path) -> None:
    """A MAP's DICOM loader reads the files of one folder: ``00/0001.dcm`` becomes ``00-0001.dcm``."""
    for series_dir in sorted(p for p in case_dir.iterdir() if p.is_dir()):
        for f in sorted(series_dir.iterdir()):
            f.rename(case_dir / f"{series_dir.name}-{f.name}")
        series_dir.rmdir()


def _gc_case(case_dir: Path, files: Sequence[Path], spacing: Sequence[float]) -> None:
    """The case's first series as the one image interface, then the DICOM files go."""
    from lightbox.sandbox.packaging_mha import write_mha

    image_dir = case_dir / GC_INTERFACE["relative_path"]
    image_dir.mkdir(parents=True)
    name = f"{uuid.uuid4()}.mha"
    write_mha(image_dir / name, _volume(files), spacing)
    inputs = [{"interface": dict(GC_INTERFACE), "image": {"name": name}, "file": None, "value": None}]
    for series_dir in [p for p in case_dir.iterdir() if p.is_dir() and p.name != "images"]:
        shutil.rmtree(series_dir)
    (case_dir / GC_INPUTS_FILE).write_text(json.dumps(inputs, indent=1))


def lay_out(
    packaging: str,
    input_dir: Path,
    manifest_cases: Sequence[Any],
    scorer_cases: Mapping[str, Mapping[str, Any]],
    output_dir: Path | None = None,
) -> None:
    """Turn the contract's input (``<case>/<series>/<slice>.dcm``) into the packaging's, case by
    case, and give each case an empty output folder (the pod mounts both by subPath)."""
    if not runs_per_case(packaging):
        return
    for case in manifest_cases:
        case_dir = input_dir / case.id
        if packaging == MAP:
            _flatten_map_case(case_dir)
        else:
            files = [input_dir / f for f in case.series[0].files]
            _gc_case(case_dir, files, scorer_cases[case.id].get("spacing") or [1.0, 1.0, 1.0])
        if output_dir is not None:
            (output_dir / case.id).mkdir(parents=True, exist_ok=True)


# --- score: the vendor's output as the contract's predictions -----------------------------


@dataclass
class Collected:
    """The contract's ``cases`` object built from per-case outputs, and why a case's entry is
    unreadable (for ``vendor check``; the scorer counts such cases as failures and says nothing)."""

    cases: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def _scan(root: Path, relative: str = "", depth: int = 0) -> list[str]:
    """Relative paths of the entries under ``root/relative`` that are not folders (links included,
    so reading one refuses the run), without following links; bounded in depth and count."""
    found: list[str] = []
    try:
        entries = sorted(os.scandir(root / relative) if relative else os.scandir(root), key=lambda e: e.name)
    except OSError:
        return found
    if len(entries) > MAX_SCANNED_ENTRIES:
        raise safeio.Unreadable(f"the case's output holds more than {MAX_SCANNED_ENTRIES} entries in one folder")
    for entry in entries:
        rel = f"{relative}/{entry.name}" if relative else entry.name
        if entry.is_dir(follow_symlinks=False):
            if depth + 1 < MAX_SCAN_DEPTH:
                found += _scan(root, rel, depth + 1)
        else:
            found.append(rel)
    return found


def _score_value(doc: Any, positive: str) -> float | None:
    """A number, a one-element list of one, or an object whose positive label is one."""
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if isinstance(doc, dict):
        doc = doc.get(positive)
    if isinstance(doc, bool) or not isinstance(doc, (int, float)):
        return None
    return float(doc)


def _result_json(case_dir: Path, top: Sequence[str]) -> str | None:
    names = [n for n in top if n.lower().endswith(".json")]
    if len(names) == 1:
        return names[0]
    return "results.json" if "results.json" in names else None


def _read_json(case_dir: Path, name: str) -> Any:
    return safeio.parse_json(
        safeio.read_beneath(case_dir, name, f"a result file ({name[-5:]})", MAX_RESULT_JSON_BYTES), "a result file"
    )


def _dicom_kind(case_dir: Path, rel: str) -> str:
    """'seg', 'sr' or '' from the SOP class in the file's first KiB (its meta header); the
    readers check the whole file again."""
    from lightbox.sandbox.segfile import MAX_SEG_BYTES

    head = safeio.read_beneath(case_dir, rel, "a DICOM result file", MAX_SEG_BYTES)[:1024]
    if SEG_SOP_CLASS in head:
        return "seg"
    return "sr" if any(uid.encode() in head for uid in SR_SOP_CLASSES) else ""


def _classification(
    case_dir: Path, files: Sequence[str], packaging: str, positive: str, info: Mapping[str, Any]
) -> tuple[Any, str | None]:
    top = [f for f in files if "/" not in f]
    name = _result_json(case_dir, top)
    if name is not None:
        value = _score_value(_read_json(case_dir, name), positive)
        if value is None:
            return {"scores": {}}, f"{name} holds no number for the positive label {positive!r}"
        return {"scores": {positive: value}}, None
    if packaging == MAP:
        dicoms = [f for f in files if f.lower().endswith(".dcm")]
        srs = [f for f in dicoms if _dicom_kind(case_dir, f) == "sr"]
        if len(srs) == 1:
            data = safeio.read_beneath(case_dir, srs[0], "a DICOM SR result", MAX_SR_BYTES)
            try:
                return {"scores": {positive: sr_score(data, positive, info.get("studyInstanceUid"))}}, None
            except safeio.Unreadable as exc:
                return {"scores": {}}, str(exc)
        if len(srs) > 1:
            return {"scores": {}}, "several DICOM SR files; write one per case"
    wanted = "one JSON file (or results.json)" + (" or one DICOM SR" if packaging == MAP else "")
    return None, f"no result: {wanted} expected"


def _map_detection(
    case_dir: Path, files: Sequence[str], positive: str, info: Mapping[str, Any]
) -> tuple[Any, str | None]:
    srs = [f for f in files if f.lower().endswith(".dcm") and _dicom_kind(case_dir, f) == "sr"]
    if not srs:
        return None, "no result: one DICOM SR with point findings (TID 1500 style) expected"
    if len(srs) > 1:
        return {"findings": None}, "several DICOM SR files; write one per case"
    data = safeio.read_beneath(case_dir, srs[0], "a DICOM SR result", MAX_SR_BYTES)
    try:
        uids = info.get("sopInstanceUids") or []
        found = sr_findings(data, positive, info.get("studyInstanceUid"), uids, info.get("geometry"))
        return {"findings": found}, None
    except safeio.Unreadable as exc:
        return {"findings": None}, str(exc)


def _detection(
    case_dir: Path, files: Sequence[str], packaging: str, positive: str, info: Mapping[str, Any]
) -> tuple[Any, str | None]:
    if packaging == MAP:
        return _map_detection(case_dir, files, positive, info)
    name = _result_json(case_dir, [f for f in files if "/" not in f])
    if name is None:
        return None, "no result: one JSON file (or results.json) with a 'Multiple points' object expected"
    doc = _read_json(case_dir, name)
    points = doc.get("points") if isinstance(doc, dict) else None
    if not isinstance(points, list) or len(points) > MAX_POINTS:
        return {"findings": None}, f"{name} is not a 'Multiple points' object with at most {MAX_POINTS} points"
    sz, sy, sx = (float(s) for s in (info.get("spacing") or [1.0, 1.0, 1.0]))
    findings: list[Any] = []
    for p in points:
        xyz = p.get("point") if isinstance(p, dict) else None
        score = p.get("probability") if isinstance(p, dict) else None
        if not (
            isinstance(xyz, list)
            and len(xyz) in (2, 3)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xyz)
        ):
            return {"findings": None}, "a point is not [x, y, z] in millimetres"
        z = xyz[2] if len(xyz) == 3 else 0.0
        if not all(map(math.isfinite, xyz)):
            return {
                "findings": [{"location": {"x": math.nan, "y": 0, "slice": 0}, "score": 0}]
            }, "a point is not finite"
        # origin 0 and identity direction (the stage step wrote the image so): index = mm / spacing
        findings.append({"location": {"x": xyz[0] / sx, "y": xyz[1] / sy, "slice": int(round(z / sz))}, "score": score})
    return {"findings": findings}, None


def _segmentation(case_dir: Path, files: Sequence[str], packaging: str, case: str) -> tuple[Any, str | None]:
    if packaging == MAP:
        segs = [f for f in files if f.lower().endswith(".dcm") and _dicom_kind(case_dir, f) == "seg"]
        what = "one DICOM SEG (.dcm)"
    else:
        segs = [f for f in files if f.startswith("images/") and f.lower().endswith(".mha")]
        what = "one MetaImage under images/"
    if not segs:
        return None, f"no result: {what} expected"
    if len(segs) > 1:
        return {"mask": None}, f"several masks; {what} expected"
    return {"mask": f"{case}/{segs[0]}"}, None


def collect(
    packaging: str, task: str, output: Path, cases: Mapping[str, Mapping[str, Any]], positive: str
) -> Collected:
    """Each case's output folder read into the contract's predictions (``cases`` from cases.json).

    Raises safeio.HostileOutput (the whole run is refused, as for predictions.json) when a file
    it reads is a link, a special file or over its limit."""
    out = Collected()
    for case, info in cases.items():
        case_dir = output / case
        try:
            files = _scan(case_dir) if case_dir.is_dir() and not case_dir.is_symlink() else []
            if task == "classification":
                entry, reason = _classification(case_dir, files, packaging, positive, info)
            elif task == "detection":
                entry, reason = _detection(case_dir, files, packaging, positive, info)
            else:
                entry, reason = _segmentation(case_dir, files, packaging, case)
        except safeio.HostileOutput:
            raise
        except safeio.Unreadable as exc:
            entry, reason = {"scores": {}, "findings": None, "mask": None}, str(exc)
        if entry is not None:
            out.cases[case] = entry
        if reason is not None:
            out.reasons[case] = reason
    return out

"""De-identify files and trees: naming, quarantine, atomic writes, parallelism.

Output layout: ``DST/<patient pseudonym>/<study token>/<instance token>.dcm``;
the tokens are keyed hashes, so no name or folder carries an identifier even
when UIDs are retained. Each file is written to a temporary name beside its
target and renamed over it, so readers never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lightbox.sandbox.deid.attributes import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    Settings,
    alignment_padding,
    burned_in_reason,
    file_meta,
    text,
)
from lightbox.sandbox.deid.dicomio import (
    _EXPLICIT_SHORT,
    _L,
    DEFLATED_LE,
    HEAD_BYTES,
    DicomError,
    Element,
    ParsedFile,
    encode_elements,
    encode_meta,
    parse_buffer,
    parse_fd,
    write_pieces,
)
from lightbox.sandbox.deid.profile import compile_profile
from lightbox.sandbox.deid.pseudonyms import Pseudonymizer
from lightbox.sandbox.deid.rewrite import Piece, Rewritten, rewrite
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.slide_dicom import removal_for
from lightbox.sandbox.deid.slide_frames import FrameError, scrub_file
from lightbox.sandbox.deid.slide_tiff import deidentify_slide_into, is_tiff

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time
if TYPE_CHECKING:  # only type checkers need these (saves importing typing at start-up)
    from typing import Literal, TypeVar

    Status = Literal["written", "quarantined", "error", "skipped", "removed"]
    T = TypeVar("T")
REASON_SUFFIX = ".reason.txt"
# Media directories index a whole file-set (names, IDs); they are not images and are not copied.
SKIPPED_NAMES = frozenset({"DICOMDIR"})

@dataclass(frozen=True, slots=True)
class FileOutcome:
    source: str
    status: Status
    output: str | None = None
    reason: str | None = None
    # Parts taken out whole (slide label/macro images): what -> count; names, never content.
    removed: dict[str, int] | None = None


@dataclass(slots=True)
class DeidSummary:
    """What a de-identification run did (counts, plus (source, reason) per refused file)."""

    files: int = 0
    written: int = 0
    quarantined: int = 0
    errors: int = 0
    skipped: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    # Slide label/overview images removed (DICOM instances, TIFF pages): what -> count.
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.quarantined == 0


@dataclass(frozen=True, slots=True)
class Job:
    """Everything a worker needs; picklable, so each process gets its own copy."""

    settings: Settings
    dst_root: Path
    quarantine_root: Path
    allow_burned_in: bool


def make_settings(key: bytes, options: Iterable[str] = (), safe_private: SafePrivateList | None = None) -> Settings:
    return Settings(
        profile=compile_profile(options),
        pseudonymizer=Pseudonymizer(key),
        safe_private=safe_private if safe_private is not None else SafePrivateList.load(),
    )


def default_quarantine(dst_root: Path) -> Path:
    """Beside DST, not inside it: quarantined pixels may still show identifying text."""
    dst_root = Path(os.path.abspath(dst_root))
    return dst_root.with_name(dst_root.name + "-quarantine")


@dataclass(slots=True)
class _Worker:
    """Per-process scratch: folders already made and this process's id (each saves a syscall
    per file), and a reused buffer for the files' first bytes."""

    folders: set[str] = field(default_factory=set)
    pid: int = field(default_factory=os.getpid)
    head: bytearray = field(default_factory=lambda: bytearray(HEAD_BYTES))


def _write_atomic(
    target: str, parsed: ParsedFile, meta: bytes, pieces: list[Piece], src_fd: int, worker: _Worker
) -> None:
    folder, name = os.path.split(target)
    if folder not in worker.folders:
        os.makedirs(folder, exist_ok=True)
        worker.folders.add(folder)
    tmp = os.path.join(folder, f".{name}.{worker.pid}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            write_pieces(fd, parsed, meta, pieces, src_fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _padding(parsed: ParsedFile, meta_length: int, pieces: list[Piece]) -> int:
    """Meta padding that puts the first bulk-data range at its source offset within a page."""
    if not parsed.spans_in_file:
        return 0
    written = meta_length
    for piece in pieces:
        if isinstance(piece, tuple):
            return alignment_padding(written, piece[0], piece[1] - piece[0])
        written += len(piece)
    return 0


def _rewrite_fd(fd: int, settings: Settings, scratch: bytearray | None = None) -> tuple[ParsedFile, Rewritten]:
    """Rewrite from the file's first bytes; re-read it whole when the header does not fit."""
    parsed = parse_fd(fd, whole=False, scratch=scratch)
    if len(parsed.buffer) < parsed.file_size:
        try:
            result = rewrite(parsed, parsed.start, settings, lambda offset, n: os.pread(fd, n, offset))
            if result.end == parsed.file_size:
                return parsed, result
        except DicomError:
            pass
        parsed = parse_fd(fd, whole=True)
    return parsed, rewrite(parsed, parsed.start, settings)


def _output_path(values: dict[int, bytes], identity: str, settings: Settings) -> str:
    sop = text(values.get(SOP_INSTANCE_UID))
    if not sop:
        raise DicomError("no SOPInstanceUID: not a composite instance")
    pseudo = settings.pseudonymizer
    study = pseudo.path_token("study", text(values.get(STUDY_INSTANCE_UID)))
    return os.path.join(pseudo.patient_id(identity), study, pseudo.path_token("instance", sop) + ".dcm")


def _meta_uids(parsed: ParsedFile, result: Rewritten, settings: Settings) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) for the new file meta, the instance mapped like the data set's."""
    sop = text(result.recorded.get(SOP_INSTANCE_UID))
    rule = settings.profile.rules.get(SOP_INSTANCE_UID)
    new_sop = settings.pseudonymizer.uid(sop) if rule is not None and rule.action == "U" else sop
    sop_class = text(result.recorded.get(SOP_CLASS_UID))
    if not sop_class:
        sop_class = next((text(e.value) for e in parsed.meta if e.tag == 0x00020002), "")
    return sop_class, new_sop


def _new_meta(parsed: ParsedFile, result: Rewritten, settings: Settings, padding: int = 0) -> bytes:
    """Encoded file meta for the rewritten data set (its SOP Instance UID mapped like the data set's)."""
    sop_class, sop = _meta_uids(parsed, result, settings)
    return encode_meta(file_meta(sop_class, sop, parsed.transfer_syntax, padding))


_PREAMBLE = b"\0" * 128 + b"DICM"


@lru_cache(maxsize=256)
def _meta_around(sop_class: str, transfer_syntax: str) -> tuple[bytes, bytes]:
    """The meta elements before and after (0002,0003), encoded: the same for a whole series."""
    elements = file_meta(sop_class, "", transfer_syntax)
    return encode_elements(elements[:2], implicit=False), encode_elements(elements[3:], implicit=False)


@lru_cache(maxsize=1024)
def _meta_padding(padding: int) -> bytes:
    return encode_elements(file_meta("", "", "", padding)[-2:], implicit=False)


def _fast_meta(sop_class: str, sop: str, transfer_syntax: str, padding: int) -> bytes:
    """``encode_meta(file_meta(...))`` built from cached parts (a test checks they agree)."""
    before, after = _meta_around(sop_class, transfer_syntax)
    body = before + encode_elements([Element(0x00020003, "UI", sop.encode())], implicit=False) + after
    if padding:
        body += _meta_padding(padding)
    return _PREAMBLE + _EXPLICIT_SHORT.pack(0x0002, 0x0000, b"UL", 4) + _L.pack(len(body)) + body


def _meta_for(parsed: ParsedFile, result: Rewritten, settings: Settings) -> bytes:
    """The new file meta, padded (see :func:`alignment_padding`) when the file has bulk data."""
    sop_class, sop = _meta_uids(parsed, result, settings)
    meta = _fast_meta(sop_class, sop, parsed.transfer_syntax, 0)
    padding = _padding(parsed, len(meta), result.pieces)
    return _fast_meta(sop_class, sop, parsed.transfer_syntax, padding) if padding else meta


FRAME_SEGMENTS = "metadata segments in compressed frames (JPEG COM/APPn, JPEG 2000 comments)"


def process_file(src: str | os.PathLike[str], job: Job, worker: _Worker | None = None) -> FileOutcome:
    """De-identify one file for ``job``; every failure becomes an outcome, never an exception."""
    source = src if isinstance(src, str) else str(src)
    if os.path.basename(source) in SKIPPED_NAMES:
        return FileOutcome(source, "skipped", reason="DICOMDIR is not copied")
    worker = worker or _Worker()
    settings = job.settings
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                parsed, result = _rewrite_fd(fd, settings, worker.head)
            except DicomError:
                if not is_tiff(os.pread(fd, 132, 0)):
                    raise
                status, output, why, parts = deidentify_slide_into(
                    source, str(job.dst_root), settings.pseudonymizer.path_token
                )
                return FileOutcome(source, status, output, why, parts or None)  # type: ignore[arg-type]
            values = result.recorded
            if (removal := removal_for(parsed, values, fd)) is not None:
                return FileOutcome(source, "removed", reason=removal, removed={removal: 1})
            result.pieces, segments = scrub_file(parsed, values, fd, result.pieces)
            relative = _output_path(values, result.identity, settings)
            reason = None if job.allow_burned_in else burned_in_reason(values)
            meta = _meta_for(parsed, result, settings)
            target = os.path.join(job.quarantine_root if reason else job.dst_root, relative)
            _write_atomic(target, parsed, meta, result.pieces, fd, worker)
        finally:
            os.close(fd)
        if reason:
            reason_file = Path(target[: -len(".dcm")] + REASON_SUFFIX)
            reason_file.write_text(f"quarantined: {reason}\n", encoding="utf-8")
            return FileOutcome(source, "quarantined", target, reason)
        return FileOutcome(source, "written", target, removed={FRAME_SEGMENTS: segments} if segments else None)
    except (DicomError, FrameError) as exc:
        return FileOutcome(source, "error", reason=str(exc))
    except (OSError, ValueError, UnicodeError) as exc:
        return FileOutcome(source, "error", reason=f"{type(exc).__name__}: {exc}")


def deidentify_bytes(data: bytes, settings: Settings) -> bytes:
    """De-identify a whole file held in memory (no quarantine check, no naming). Raises DicomError."""
    parsed = parse_buffer(data, len(data), elements=False)
    result = rewrite(parsed, parsed.start, settings)
    if result.end != parsed.file_size:
        raise DicomError("data set ends before the end of the data")
    try:
        result.pieces, _ = scrub_file(parsed, result.recorded, -1, result.pieces)
    except FrameError as exc:
        raise DicomError(str(exc)) from None
    body = b"".join(bytes(parsed.buffer[p[0] : p[1]]) if isinstance(p, tuple) else bytes(p) for p in result.pieces)
    meta = _new_meta(parsed, result, settings)
    if parsed.transfer_syntax == DEFLATED_LE:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        return meta + compressor.compress(body) + compressor.flush()
    return meta + body


def deidentify_file(
    src: Path,
    dst_root: Path,
    *,
    key: bytes,
    options: Iterable[str] = (),
    allow_burned_in: bool = False,
    quarantine_root: Path | None = None,
    safe_private: SafePrivateList | None = None,
) -> FileOutcome:
    """De-identify one file into ``dst_root`` (quarantine next to it when refused)."""
    settings = make_settings(key, options, safe_private)
    job = Job(settings, Path(dst_root), quarantine_root or default_quarantine(dst_root), allow_burned_in)
    return process_file(Path(src), job)


def walk_files(root: str | os.PathLike[str]) -> list[str]:
    """:func:`iter_files` as strings (no Path per file), spelled as ``str(Path(...))`` would."""
    top = str(Path(root))
    if os.path.isfile(top):
        return [top]
    found: list[str] = []
    join = os.path.join
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        found.extend([join(dirpath, name) for name in sorted(filenames)])
    return found


def iter_files(root: Path) -> list[Path]:
    """Regular files under ``root`` (or ``root`` itself), sorted, symlinked folders not followed."""
    return [Path(p) for p in walk_files(root)]


# What a chunk of files came to: files, written, skipped, and the outcome of every other file
# (and of written files that had parts removed, for the summary's counts).
ChunkResult = tuple[int, int, int, list[FileOutcome]]


def _deid_chunk(job: Job, worker: _Worker, chunk: list[str]) -> ChunkResult:
    written = skipped = 0
    refused: list[FileOutcome] = []
    for path in chunk:
        outcome = process_file(path, job, worker)
        if outcome.status == "written":
            written += 1
            if outcome.removed:
                refused.append(outcome)  # carried back for its counts
        elif outcome.status == "skipped":
            skipped += 1
        else:
            refused.append(outcome)
    return len(chunk), written, skipped, refused


# A pool worker's job and scratch, set once per process by the pool's initialiser, so
# tasks carry only file names (and each worker keeps its folder and pseudonym caches).
_POOL_STATE: tuple[Job, _Worker] | None = None


def _init_pool_worker(job: Job) -> None:
    global _POOL_STATE
    _POOL_STATE = (job, _Worker())


def _pool_chunk(chunk: list[str]) -> ChunkResult:
    assert _POOL_STATE is not None
    return _deid_chunk(*_POOL_STATE, chunk)


def _deid_parallel(job: Job, paths: list[str], jobs: int) -> Iterator[ChunkResult]:
    if jobs <= 1 or len(paths) < 8:
        worker = _Worker()
        for i in range(0, len(paths), 32):
            yield _deid_chunk(job, worker, paths[i : i + 32])
        return
    chunks = _guided_chunks(paths, jobs)
    if hasattr(os, "fork"):
        yield from _forked(job, chunks, min(jobs, len(chunks)))
        return
    with _pool(min(jobs, len(chunks)), _init_pool_worker, (job,)) as pool:
        yield from pool.imap_unordered(_pool_chunk, chunks)


def _guided_chunks(paths: list[str], jobs: int) -> list[list[str]]:
    """Chunks that shrink as the work runs out: large ones first (few tasks, little dispatch
    cost), then smaller ones, so the workers finish together; never more than 32 files."""
    chunks: list[list[str]] = []
    i = 0
    while i < len(paths):
        size = max(1, min(32, (len(paths) - i) // (jobs * 4)))
        chunks.append(paths[i : i + size])
        i += size
    return chunks


def _pool(processes: int, initializer: Callable[..., None] | None = None, initargs: tuple[object, ...] = ()):
    import multiprocessing  # its pool machinery costs start-up time that `lightbox deid` does without

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    return context.Pool(processes, initializer, initargs)


# ---------------------------------------------------------------- forked workers
#
# `lightbox deid` forks its workers itself rather than through multiprocessing.Pool: the
# children inherit the job and the list of chunks, so a task is a 4-byte chunk number
# read from a shared pipe (reads of at most PIPE_BUF bytes are atomic, so each number goes
# to exactly one worker) and a result is a short JSON frame on the worker's own pipe.
# This saves the pool's imports, threads and pickling, a visible share of a short run.

_TICKET = struct.Struct("<I")
_FRAME = struct.Struct("<I")
_TICKETS_PER_WRITE = 1024  # 4 KiB: one atomic pipe write


def _encode_result(result: ChunkResult) -> bytes:
    count, written, skipped, refused = result
    body = json.dumps(
        [count, written, skipped, [[o.source, o.status, o.output, o.reason, o.removed] for o in refused]]
    ).encode()
    return _FRAME.pack(len(body)) + body


def _decode_result(body: bytes) -> ChunkResult:
    count, written, skipped, refused = json.loads(body)
    return count, written, skipped, [FileOutcome(*o) for o in refused]


def _write_all_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child(job: Job, chunks: list[list[str]], tickets: int, results: int) -> None:
    worker = _Worker()
    while True:
        ticket = os.read(tickets, _TICKET.size)
        if len(ticket) < _TICKET.size:
            return  # no more work (the parent closed its end)
        (index,) = _TICKET.unpack(ticket)
        _write_all_fd(results, _encode_result(_deid_chunk(job, worker, chunks[index])))


def _forked(job: Job, chunks: list[list[str]], workers: int) -> Iterator[ChunkResult]:
    ticket_r, ticket_w = os.pipe()
    pids: dict[int, int] = {}  # result pipe -> child pid
    finished = False
    try:
        for _ in range(workers):
            result_r, result_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: never returns into the caller's code
                status = 1
                try:
                    os.close(ticket_w)
                    os.close(result_r)
                    for fd in pids:
                        os.close(fd)
                    _child(job, chunks, ticket_r, result_w)
                    status = 0
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    os._exit(status)
            os.close(result_w)
            pids[result_r] = pid
        os.close(ticket_r)
        ticket_r = -1
        # Hand out tickets as results come back, so the ticket pipe never fills up.
        issued = 0

        def issue(n: int) -> None:
            nonlocal issued, ticket_w
            while n > 0 and issued < len(chunks):
                k = min(n, _TICKETS_PER_WRITE, len(chunks) - issued)
                _write_all_fd(ticket_w, b"".join(_TICKET.pack(i) for i in range(issued, issued + k)))
                issued += k
                n -= k
            if issued == len(chunks) and ticket_w >= 0:
                os.close(ticket_w)
                ticket_w = -1

        issue(4 * _TICKETS_PER_WRITE)
        buffers = {fd: bytearray() for fd in pids}
        done = 0
        while buffers:
            ready, _, _ = select.select(list(buffers), [], [])
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if not data:
                    del buffers[fd]
                    continue
                buf = buffers[fd]
                buf += data
                while len(buf) >= _FRAME.size:
                    (n,) = _FRAME.unpack_from(buf)
                    if len(buf) < _FRAME.size + n:
                        break
                    body = bytes(buf[_FRAME.size : _FRAME.size + n])
                    del buf[: _FRAME.size + n]
                    done += 1
                    issue(1)
                    yield _decode_result(body)
        finished = True
        if done != len(chunks):
            raise RuntimeError(f"a worker process ended early: {len(chunks) - done} of {len(chunks)} chunks not done")
    finally:
        for fd in (ticket_r, ticket_w):
            if fd >= 0:
                os.close(fd)
        for fd, pid in pids.items():
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(ChildProcessError):
                if not finished:  # interrupted, or the caller stopped early: stop the workers
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)


def available_cores() -> int:
    """Cores this process may run on (a container's cpuset, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_parallel(func: Callable[[list[Path]], T], paths: list[Path], jobs: int) -> Iterator[T]:
    """Yield ``func(chunk)`` results, in chunks small enough for a smooth progress bar."""
    if jobs <= 1 or len(paths) < 8:
        for i in range(0, len(paths), 16):
            yield func(paths[i : i + 16])
        return
    size = max(1, min(16, len(paths) // (jobs * 8)))  # small chunks: workers finish together
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    with _pool(min(jobs, len(chunks))) as pool:
        yield from pool.imap_unordered(func, chunks)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int, enabled: bool, desc: str = "deid"):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm  # imported only when shown: it is a noticeable share of a small run

    return tqdm(total=total, unit="file", desc=desc)


def deidentify_tree(
    src: Path,
    dst: Path,
    *,
    key: bytes,
    options: Iterable[str] = (),
    jobs: int | None = None,
    allow_burned_in: bool = False,
    quarantine_root: Path | None = None,
    safe_private: SafePrivateList | None = None,
    progress: bool = False,
    exclude: frozenset[str] = frozenset(),
) -> DeidSummary:
    """De-identify every file under ``src`` into ``dst``; never raises for a bad file.
    ``exclude``: paths (as walked) the caller handles itself, e.g. a slide dataset's cohort sheet."""
    dst = Path(dst)
    job = Job(
        make_settings(key, options, safe_private), dst, quarantine_root or default_quarantine(dst), allow_burned_in
    )
    paths = [p for p in walk_files(src) if p not in exclude]
    summary = DeidSummary(files=len(paths))
    with _progress_bar(len(paths), progress) as bar:
        for count, written, skipped, refused in _deid_parallel(job, paths, jobs or available_cores()):
            summary.written += written
            summary.skipped += skipped
            for outcome in refused:
                for part, n in (outcome.removed or {}).items():
                    summary.removed[part] = summary.removed.get(part, 0) + n
                if outcome.status in ("written", "removed"):
                    continue
                summary.refused.append((outcome.source, outcome.reason or outcome.status))
                if outcome.status == "quarantined":
                    summary.quarantined += 1
                else:
                    summary.errors += 1
            bar.update(count)
    summary.refused.sort()
    return summary

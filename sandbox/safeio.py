"""Reading what a vendor container wrote: hostile by assumption.

The scorer has the ground truth mounted, so a link in the vendor's output could point it at the
truth (or at a FIFO that blocks it, or a device), and a small file could expand into all of its
memory. Every read of the vendor's output goes through here:

* paths are walked one component at a time below the output directory with ``O_NOFOLLOW``, so
  no symbolic link is ever followed, at most ``MAX_PATH_DEPTH`` folders deep;
* only regular files with a single link are opened (checked with ``lstat`` before opening, so
  opening cannot block on a FIFO or touch a device, and with ``fstat`` after, so the checked
  file is the one read);
* sizes are bounded before reading, and decoders are bounded before they allocate: JSON by
  counting its containers and values in the raw bytes, ``.npz`` by the declared size, dtype and
  shape of its one array.

Errors are :class:`HostileOutput` (a rule a well-behaved container never breaks: the run ends
as MalformedPredictions) or :class:`Unreadable` (an ordinary mistake in one case's file, counted
as a failed case). Their messages name the rule only, never text or names from the vendor's
files, because they end up in the run's status.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the operator loads this module and never needs numpy
    import numpy as np

MAX_PATH_DEPTH = 8  # folders below the output directory; the contract needs one ("masks/")
MAX_PATH_BYTES = 1024
# json.loads builds about 80 bytes of Python objects per container and 40 per scalar; these
# bound what a predictions.json can cost whatever its size (about 80 + 160 MiB), while a real one
# needs 2 containers per case (4 per detection finding) and a few values each.
MAX_JSON_CONTAINERS = 1 << 20
MAX_JSON_VALUES = 1 << 22
MAX_JSON_DEPTH = 16  # predictions.json needs 6 (document, cases, case, findings, finding, location)
MAX_NPZ_MEMBERS = 16
NPY_HEADER_ALLOWANCE = 1 << 16


class _Refusal(ValueError):
    """``str()``: what the file did, in one line, for ``vendor check`` on the vendor's own
    machine. ``rule``: which rule it breaks, holding only our own names and limits: this is what
    may reach a run's status, where any number the vendor chose would be a covert channel."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule or message


class HostileOutput(_Refusal):
    """The output breaks a rule no well-behaved container breaks: the run ends as MalformedPredictions."""


class Unreadable(_Refusal):
    """An ordinary defect in one file (not found, wrong format or shape): one failed case."""


def _describe_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def split_relative(relative: object, what: str) -> list[str]:
    """The components of a vendor-written relative path, refusing absolute paths, ``..``, empty
    or odd components and paths deeper than ``MAX_PATH_DEPTH``."""
    if not isinstance(relative, str) or not relative:
        raise Unreadable(f"{what}: the path is not a non-empty string")
    if len(relative.encode(errors="surrogatepass")) > MAX_PATH_BYTES or "\x00" in relative or "\\" in relative:
        raise Unreadable(f"{what}: the path is longer than {MAX_PATH_BYTES} bytes or holds NUL or backslash")
    if relative.startswith("/"):
        raise Unreadable(f"{what}: the path is absolute; give it relative to the output directory")
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Unreadable(
            f"{what}: the path has an empty, '.' or '..' component; it must stay inside the output directory"
        )
    if len(parts) - 1 > MAX_PATH_DEPTH:
        raise HostileOutput(
            f"{what} is {len(parts) - 1} folders deep; the limit is {MAX_PATH_DEPTH}",
            f"{what} is more than {MAX_PATH_DEPTH} folders deep",
        )
    return parts


def _open_dir(name: str, dir_fd: int, what: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise Unreadable(f"{what}: a folder of its path does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                kind = _describe_mode(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except OSError:
                kind = "not a folder"
            raise HostileOutput(f"{what}: a folder of its path is {kind}; write real folders") from None
        raise Unreadable(
            f"{what}: a folder of its path cannot be opened ({errno.errorcode.get(exc.errno or 0, 'error')})"
        ) from None


def _open_regular(name: str, dir_fd: int, what: str, max_bytes: int) -> int:
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise Unreadable(f"{what} was not written") from None
    except OSError as exc:
        raise Unreadable(f"{what} cannot be examined ({errno.errorcode.get(exc.errno or 0, 'error')})") from None
    _check_regular(before, what, max_bytes)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HostileOutput(f"{what} is a symbolic link; write a regular file") from None
        raise Unreadable(f"{what} cannot be opened ({errno.errorcode.get(exc.errno or 0, 'error')})") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise HostileOutput(f"{what} was replaced while it was being opened")
    try:
        _check_regular(after, what, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(st: os.stat_result, what: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise HostileOutput(f"{what} is {_describe_mode(st.st_mode)}; only regular files are read")
    if st.st_nlink > 1:
        # a hard link shares its content with a file the scorer might otherwise trust
        raise HostileOutput(
            f"{what} has {st.st_nlink} hard links; write each file once, without linking it",
            f"{what} has more than one hard link; write each file once, without linking it",
        )
    if st.st_size > max_bytes:
        raise HostileOutput(
            f"{what} is {st.st_size} bytes; the limit is {max_bytes}",
            f"{what} is larger than the limit of {max_bytes} bytes",
        )


def _read_fd(fd: int, what: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
        except OSError as exc:
            raise Unreadable(f"{what} cannot be read ({errno.errorcode.get(exc.errno or 0, 'error')})") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:  # the file grew after it was measured
            raise HostileOutput(f"{what} grew past the limit of {max_bytes} bytes while it was read")


def read_beneath(root: Path, relative: object, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``relative`` below ``root`` (the trusted output mount),
    following no link on the way and reading at most ``max_bytes``."""
    parts = split_relative(relative, what)
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise Unreadable(f"{what}: the output directory cannot be opened") from None
    try:
        for part in parts[:-1]:
            next_fd = _open_dir(part, dir_fd, what)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = _open_regular(parts[-1], dir_fd, what, max_bytes)
    finally:
        os.close(dir_fd)
    try:
        return _read_fd(fd, what, max_bytes)
    finally:
        os.close(fd)


def read_regular(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path`` whose folder is trusted but whose last component is not."""
    return read_beneath(path.parent, path.name, what, max_bytes)


# --- JSON ----------------------------------------------------------------------------------


def _depth(doc: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in value)
    return deepest


def parse_json(data: bytes, what: str) -> Any:
    """``data`` as JSON, refusing before parsing what would cost more memory than the limits
    allow (counted in the raw bytes, so brackets and commas inside strings count too: a real
    file is far from the limits) and after parsing anything nested deeper than MAX_JSON_DEPTH."""
    containers = data.count(b"{") + data.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise HostileOutput(
            f"{what} holds {containers} objects and arrays; the limit is {MAX_JSON_CONTAINERS}",
            f"{what} holds more than {MAX_JSON_CONTAINERS} objects and arrays",
        )
    values = data.count(b",") + data.count(b":") + 1
    if values > MAX_JSON_VALUES:
        raise HostileOutput(
            f"{what} holds about {values} values; the limit is {MAX_JSON_VALUES}",
            f"{what} holds more than {MAX_JSON_VALUES} values (commas and colons)",
        )
    try:
        doc = json.loads(data)
    except RecursionError:
        raise HostileOutput(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise Unreadable(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", f"{what} is not valid JSON"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise Unreadable(f"{what} is not valid UTF-8 JSON") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise HostileOutput(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


# --- .npz ----------------------------------------------------------------------------------


def npz_file_limit(elements: int) -> int:
    """The largest .npz (on disk) a mask of ``elements`` voxels needs: stored float64 and headers."""
    return elements * 8 + NPY_HEADER_ALLOWANCE * MAX_NPZ_MEMBERS


def load_npz_array(data: bytes, what: str, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """The array ``name`` (or the only array) of an .npz held in ``data``, refusing pickles and
    any array that is not numeric with as many elements as ``shape``, and checking the zip
    member's declared size before anything is decompressed (so a small file cannot inflate
    into more than the image's size in float64)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise Unreadable(f"{what} is not a readable .npz (zip) file") from None
    if len(infos) > MAX_NPZ_MEMBERS:
        raise HostileOutput(
            f"{what} has {len(infos)} zip members; the limit is {MAX_NPZ_MEMBERS}",
            f"{what} has more than {MAX_NPZ_MEMBERS} zip members",
        )
    arrays = [i for i in infos if i.filename.endswith(".npy")]
    chosen = [i for i in arrays if i.filename == f"{name}.npy"] or (arrays if len(arrays) == 1 else [])
    if not chosen:
        raise Unreadable(f"{what} has no array named '{name}'")
    info = chosen[0]
    elements = math.prod(shape)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2/lzma streams choose their own decoder memory; numpy writes neither
        raise Unreadable(f"{what} uses a zip compression other than stored or deflate")
    limit = elements * 8 + NPY_HEADER_ALLOWANCE
    if info.file_size > limit:
        raise HostileOutput(
            f"{what} declares {info.file_size} bytes uncompressed; a mask of this image needs at most {limit}",
            f"{what} declares more bytes uncompressed than a mask of this image needs ({limit})",
        )
    try:
        with archive.open(info) as fh:
            raw = fh.read(limit + 1)  # the zip reader stops at the declared size and checks the CRC
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError, NotImplementedError):
        raise Unreadable(f"{what} is a damaged zip file") from None
    if len(raw) > limit:
        raise HostileOutput(f"{what} expands past {limit} bytes")
    return _npy_array(raw, what, tuple(shape))


def _npy_array(raw: bytes, what: str, expected: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    fh = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(fh)
    except (ValueError, SyntaxError, TypeError, EOFError):
        raise Unreadable(f"{what} does not hold a NumPy array") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise Unreadable(f"{what} has dtype {dtype} (use uint8 or bool)", f"{what} is not numeric (use uint8 or bool)")
    count = math.prod(shape)
    if count != math.prod(expected):
        raise Unreadable(
            f"shape {tuple(shape)} != (slices, rows, columns) {expected}",
            f"{what} does not have the shape of the case's image",
        )
    offset = fh.tell()
    if len(raw) - offset != count * dtype.itemsize:
        raise Unreadable(f"{what} holds another amount of data than its header declares")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)

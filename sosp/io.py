"""Atomic file writes, run-folder locks and checked checkpoint loading: nothing half-written is
ever read, nothing but a regular file is ever replaced, and one command at a time writes a run
folder."""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sosp.errors import BadInput
from sosp.signals import deferred

LOCK = ".sosp.lock"  # in a run folder while a command writes it (`claim_folder`)
# OSErrors of the user's disk, quota or permissions, not of the code: the fix each needs.
WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another --out",
    errno.EDQUOT: "free space within your disk quota or choose another --out",
    errno.EFBIG: "the file exceeds the file size limit (ulimit -f) or the file system's; "
    "choose another --out",
    errno.EROFS: "that file system is read-only; choose another --out",
    errno.EACCES: "make the folder writable or choose another --out",
    errno.EPERM: "make the folder writable or choose another --out",
    errno.ENAMETOOLONG: "choose a shorter --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another --out",
}
# What `file_kind` calls a path that is neither a regular file nor a folder.
SPECIAL_KINDS = {
    stat.S_ISCHR: "character device",
    stat.S_ISBLK: "block device",
    stat.S_ISFIFO: "FIFO (named pipe)",
    stat.S_ISSOCK: "socket",
}


def atomic_write(path: str | os.PathLike, write: Callable) -> None:
    """Call `write(f)` on a binary temporary file beside `path`, then rename it into place.
    Refused (`BadInput`): a `path` that exists and is not a regular file (a device, a FIFO, a
    folder), and a write the disk or its permissions stop (full, quota, read-only: the fix in
    `WRITE_FIXES`); either way the file at `path` is untouched and no temporary file is left."""
    path = Path(path)
    try:
        refuse_special(path)
        _write_then_rename(path, write)
    except OSError as e:
        if e.errno not in WRITE_FIXES:
            raise
        raise BadInput(f"cannot write {path} ({e.strerror}); {WRITE_FIXES[e.errno]}") from e


def _write_then_rename(path: Path, write: Callable) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name kept short: a long `path.name` must not make the temporary name too long
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    try:
        with _open_temp(fd) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_temp(fd: int):
    """The temporary file `atomic_write` writes, opened from its descriptor."""
    return os.fdopen(fd, "wb")


def refuse_special(path: str | os.PathLike) -> None:
    """Refuse (`BadInput`) writing `path` where it exists (a symbolic link: where it points)
    and is not a regular file: a device, FIFO, socket or folder is never replaced."""
    kind = file_kind(path)
    if kind not in (None, "file"):
        raise BadInput(
            f"{path} exists and is a {kind}, not a regular file; sosp replaces only regular "
            "files: choose another --out"
        )


def file_kind(path: str | os.PathLike) -> str | None:
    """What `path` is, following symbolic links: "file" (regular), "folder", a kind of
    `SPECIAL_KINDS`, or None where nothing is there (or a link points nowhere)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return next((kind for test, kind in SPECIAL_KINDS.items() if test(mode)), "special file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_csv(
    path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None
) -> None:
    """Write `rows` as CSV with a header (`columns`, default the first row's keys; a row's
    missing keys are empty cells) to `path` atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns or list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file's content; a clear error when it is unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{path} is not readable JSON ({e}); delete it and re-run") from e


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically."""

    def save(f) -> None:
        sink = _KeepsWriteError(f)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:  # torch reports it as a mismatch of file positions
                raise sink.error from None
            raise

    atomic_write(path, save)


@dataclass
class _KeepsWriteError:
    """A binary file for torch.save that keeps the OSError that stopped a write (a full disk):
    torch's zip writer drops it and raises a RuntimeError about file positions instead."""

    file: io.BufferedIOBase
    error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint dict (tensors and plain data only); a clear error when it is missing,
    a folder, truncated or not a checkpoint."""
    path = Path(path)
    refuse_folder(path, ("*.pt", "*.pth"), "checkpoint")
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        _refuse_json(path)
        raise BadInput(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); "
            "delete it and re-create it"
        ) from e
    if not isinstance(obj, dict):
        raise BadInput(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def refuse_folder(path: str | os.PathLike, wanted: Sequence[str], what: str) -> None:
    """Refuse (`BadInput`) a folder given where a file belongs, naming the file to pass: the
    first file inside it, or else in one of its sub-folders (a ratio's), that matches a glob
    pattern of `wanted`, in that order of preference. `what`: the file's kind, for the
    message."""
    path = Path(path)
    if not path.is_dir():
        return
    inside = [f for pattern in wanted for f in sorted(path.glob(pattern)) if f.is_file()]
    inside = inside or [f for p in wanted for f in sorted(path.glob(f"*/{p}")) if f.is_file()]
    hint = (
        f"pass the {inside[0].relative_to(path)} inside it ({inside[0]})"
        if inside
        else f"it holds no {' or '.join(wanted)}: pass the {what} file itself"
    )
    raise BadInput(f"{path} is a folder, not a {what} file; {hint}")


def _refuse_json(path: Path) -> None:
    """Where a file torch cannot load is JSON (a mask, a report), say so instead of calling it
    corrupt: deleting it would be the wrong fix."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return
    raise BadInput(f"{path} is a JSON file, not a checkpoint (a .pt file written by torch.save)")


# -- run-folder locks --------------------------------------------------------------------------


@dataclass
class _Claim:
    """A run folder this process locked: the lock file's descriptor, the folders claiming it
    created (outermost first) and the files there before, {path: mtime in ns}."""

    fd: int
    created: list[Path]
    before: dict[Path, int] = field(default_factory=dict)


_CLAIMS: dict[Path, _Claim] = {}
# errnos of a file system that has no flock (some network mounts): the folder goes unlocked
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


def claim_folder(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Create `folder` (and its missing parents) and lock it for this process until
    `release_folders` or the process ends, killed or not (an flock on `LOCK` inside it, which
    the kernel drops with the process). A folder another process holds is refused
    (`BadInput`, naming it and that process); claiming one this process holds is a no-op."""
    key = Path(os.path.abspath(folder))
    if key in _CLAIMS:
        return
    with deferred():  # a stop between creating the lock file and recording the claim would
        _claim(key, folder, flag)  # leave the file, and say nothing about the folder


def _claim(key: Path, folder: str | os.PathLike, flag: str) -> None:
    created = [p for p in (key, *key.parents) if not p.exists()][::-1]
    key.mkdir(parents=True, exist_ok=True)
    before = _files(key)
    while True:
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            _remove_created(created)
            raise BadInput(
                f"{flag} {folder} is being written by another sosp command ({holder}); wait "
                f"for it to finish, or choose another {flag}"
            ) from None
        except OSError as e:
            if e.errno not in NO_LOCKS:
                os.close(fd)
                raise
        if _same_file(fd, key / LOCK):  # not one a releasing holder removed meanwhile
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _CLAIMS[key] = _Claim(fd, created, before)


def claimed_folders() -> list[Path]:
    """The run folders this process holds (`claim_folder`), in the order claimed."""
    return list(_CLAIMS)


def written_since_claimed(folder: Path) -> list[Path]:
    """The files in a claimed `folder` (see `_files`) that are new or changed since it was
    claimed, relative to it; the lock file and temporary files left out."""
    before = _CLAIMS[folder].before
    return [p.relative_to(folder) for p, t in _files(folder).items() if before.get(p) != t]


def release_folders() -> None:
    """Unlock every folder this process claimed, removing its lock file, and the folders the
    claim created where nothing else was written into them."""
    while _CLAIMS:
        folder, claim = _CLAIMS.popitem()
        (folder / LOCK).unlink(missing_ok=True)  # before the unlock: see `_same_file`
        os.close(claim.fd)
        _remove_created(claim.created)


def _remove_created(created: list[Path]) -> None:
    """Remove the folders in `created` (outermost first) that are empty, innermost first."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty: something was written there
            return


def _files(folder: Path) -> dict[Path, int]:
    """{file: mtime in ns} of the files in `folder` and its sub-folders (a ratio's), not
    deeper (W&B's), not the lock or temporary files."""
    found = sorted([*folder.glob("*"), *folder.glob("*/*")])
    return {
        p: p.stat().st_mtime_ns
        for p in found
        if p.is_file() and p.name != LOCK and not p.name.endswith(".tmp")
    }


def _holder(fd: int) -> str:
    """Who holds a lock file: the "pid N on HOST" its holder wrote, else "another process"."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "another process"


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open `fd` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False

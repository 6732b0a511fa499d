"""Atomic file writes and checked checkpoint loading: nothing half-written is ever read."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import torch

from sosp.errors import BadInput


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(f)` on a binary temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint dict (tensors and plain data only); a clear error when it is missing,
    truncated or not a checkpoint."""
    path = Path(path)
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


def _refuse_json(path: Path) -> None:
    """Where a file torch cannot load is JSON (a mask, a report), say so instead of calling it
    corrupt: deleting it would be the wrong fix."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return
    raise BadInput(f"{path} is a JSON file, not a checkpoint (a .pt file written by torch.save)")

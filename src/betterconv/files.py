"""File writing that never leaves a half-written output: a temporary file beside the target (`.NAME.tmpPID`),
written and flushed to disk, then renamed over the target, so that the target is always either the old file or the
new one. A write that fails (a full disk, a folder that is a file) is a `BetterConvError` naming the file."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import BetterConvError, first_line

_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")


def temporary_path(path: Path) -> Path:
    """The temporary file beside `path` that `write_atomic` writes before renaming it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _message(path: Path, error: OSError) -> str:
    return f"{path}: {error.strerror or first_line(error)}"


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename; the old `path` stays until the rename.
    An `OSError` becomes a `BetterConvError` "PATH: reason" and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BetterConvError(_message(Path(e.filename) if e.filename else path.parent, e)) from None
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as e:
        raise BetterConvError(_message(path, e)) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing while it cleans up
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process
    except (ProcessLookupError, OverflowError, ValueError):
        return False  # no such process (or an impossible pid)
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (`.NAME.tmpPID`) that writers killed in the middle of a write left in `folder`,
    those of processes still running excepted; returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match is None or _alive(int(match.group(1))) or not entry.is_file():
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BetterConvError(_message(entry, e)) from None
        removed.append(entry)
    return removed

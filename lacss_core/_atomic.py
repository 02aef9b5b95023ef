"""Atomic file writes: every file lacss-core writes appears complete or not at all.

A writer produces its file under a temporary name in the destination's folder and moves it into
place with ``os.replace`` (atomic on POSIX and Windows within one file system). A crash, a
Ctrl-C or a full disk therefore never leaves a truncated output under the real name, and a reader
never sees a half-written file. The temporary name keeps the destination's suffix (Keras insists
on ``.keras``, tifffile and imageio choose the format by it) and names the writing process, so
leftovers of a killed process can be recognised and removed (:func:`remove_stale_temporaries`).

Use :func:`atomic_path` for writers that take a path (``tifffile.imwrite``, ``model.save``,
``savefig``) and :func:`atomic_open` for writers that take a file object.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: Prefix of every temporary file; nothing else lacss-core writes starts with it.
TMP_PREFIX = ".lacss-tmp-"


def temporary_name(path) -> Path:
    """A fresh temporary path beside ``path`` that ends with ``path``'s own name."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


@contextlib.contextmanager
def atomic_path(path, *, fsync: bool = True):
    """Yield a temporary path to write; on success it replaces ``path``, on any error (or
    KeyboardInterrupt) it is removed and ``path`` is left as it was.

    Example::

        with atomic_path("out/a_label.tif") as tmp:
            tifffile.imwrite(tmp, label)
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """``open(path, mode, **kwargs)`` for writing through a temporary file (see
    :func:`atomic_path`); ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """Flush a file that another library wrote and closed to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (permission denied counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files in ``folder`` left by processes that no longer run.

    Returns the removed paths. Temporaries of running processes (another run still writing)
    are kept.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and _process_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


__all__ = ["TMP_PREFIX", "atomic_open", "atomic_path", "remove_stale_temporaries"]

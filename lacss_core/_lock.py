"""One run at a time per output folder: a lock file that names its holder.

``lacss predict`` and training take ``FOLDER/.lacss.lock`` before writing into ``FOLDER``, so two
runs into one folder cannot mix their files. The lock file holds JSON naming the holder (pid,
host, start time, command). It is created with ``O_CREAT | O_EXCL`` (atomic; also on NFS v3+), and
removed when the run ends, also on errors and Ctrl-C. A lock left by a process that died (SIGKILL,
power loss) is recognised as stale when its host is this machine and its pid no longer runs, and
is taken over; a lock held from another machine cannot be checked, so the error says whom it names
and how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from lacss_core._atomic import _process_alive

LOCK_NAME = ".lacss.lock"
_UNREADABLE_GRACE_S = 2.0  # a lock file just created may not hold its JSON yet


class FolderLockedError(RuntimeError):
    """Another run holds the folder's lock."""


class FolderLock:
    """Exclusive use of ``folder`` by this process, as a context manager.

    Args:
        folder: the output folder (created if missing).
        purpose: what the holder does, shown to a run that finds the folder locked.
    Raises:
        FolderLockedError: on entry, when a live process (or one on another host) holds it.
        OSError: the folder cannot be created or written (so an unwritable output is found
            before any work).
    """

    def __init__(self, folder, purpose: str = "lacss"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._record: dict | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the folder if needed and take the lock, recording who holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv),
        }
        for _ in range(3):  # a stale lock is removed and creation retried
            if self._create(record):
                self._record = record
                return
            holder = self._read_holder()
            if holder is not None and not self._is_stale(holder):
                raise FolderLockedError(self._locked_message(holder))
            self._remove_stale(holder)
        raise FolderLockedError(f"could not lock {self.folder}: {self.path} keeps reappearing")

    def release(self) -> None:
        """Remove the lock file if this process still holds it (idempotent)."""
        if self._record is None:
            return
        try:
            if self._read() == self._record:  # never remove a lock another process took over
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self._record = None

    def _create(self, record: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return True

    def _read(self) -> dict:
        with open(self.path) as f:
            return json.load(f)

    def _read_holder(self) -> dict | None:
        """The holder's record; None if the lock vanished or stays unreadable (stale)."""
        deadline = time.monotonic() + _UNREADABLE_GRACE_S
        while True:
            try:
                holder = self._read()
                return holder if isinstance(holder, dict) else None
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)

    @staticmethod
    def _is_stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot check a process on another machine
        pid = holder.get("pid")
        return not isinstance(pid, int) or not _process_alive(pid)

    def _remove_stale(self, holder: dict | None) -> None:
        try:
            if holder is None or self._read() == holder:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def _locked_message(self, holder: dict) -> str:
        who = (
            f"{holder.get('purpose', 'a run')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started')})"
        )
        return (
            f"{self.folder} is in use by another run: {who}. Wait for it to finish or choose "
            f"another output folder; if that run is no longer alive, delete {self.path}"
        )


__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError"]

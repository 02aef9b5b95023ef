"""Atomic writes and the folder lock: nothing half-written, no two runs in one folder."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from lacss_core import export
from lacss_core._atomic import TMP_PREFIX, atomic_open, atomic_path, remove_stale_temporaries
from lacss_core._lock import LOCK_NAME, FolderLock, FolderLockedError

LABEL = np.zeros((16, 16), np.int32)
LABEL[2:8, 3:9] = 1
DETAILS = {
    "scores": np.array([0.9], np.float32),
    "locations": np.array([[4.5, 5.5]], np.float32),
    "areas": np.array([36], np.int32),
    "bboxes": np.array([[2, 3, 8, 9]], np.int32),
}


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a_label.tif"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a_label.tif"]


def test_atomic_open_replaces_only_when_complete(tmp_path):
    target = tmp_path / "x.json"
    with atomic_open(target) as f:
        f.write("{}")
        assert not target.exists()  # nothing under the real name while writing
        assert len(os.listdir(tmp_path)) == 1
    assert target.read_text() == "{}"
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_open(target, "a"):
            pass


@pytest.mark.parametrize(
    "write",
    [
        lambda p: export.write_label_tiff(p / "a_label.tif", LABEL),
        lambda p: export.write_overlay_png(p / "a_overlay.png", LABEL.astype(float), LABEL),
        lambda p: export.write_csv(p / "a_cells.csv", DETAILS),
        lambda p: export.write_coco_json(p / "a_coco.json", LABEL, DETAILS),
        lambda p: export.write_imagej_rois(p / "a_rois.zip", LABEL),
    ],
    ids=["label", "overlay", "csv", "coco", "rois"],
)
def test_every_writer_goes_through_a_temporary_file(tmp_path, monkeypatch, write):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)) or real_replace(a, b))
    write(tmp_path)
    ((source, destination),) = renames
    assert os.path.basename(source).startswith(TMP_PREFIX)
    assert os.path.dirname(source) == os.path.dirname(destination) == str(tmp_path)
    assert os.listdir(tmp_path) == [os.path.basename(destination)]


def test_a_writer_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    def half_then_crash(path, data, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*\x00" + b"\x00" * 16)
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        export.write_label_tiff(tmp_path / "a_label.tif", LABEL)
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f"{TMP_PREFIX}{dead_pid()}-abcd-a_label.tif"
    alive = tmp_path / f"{TMP_PREFIX}{os.getpid()}-abcd-b_label.tif"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    (tmp_path / "keep.tif").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "keep.tif"])


def test_the_lock_names_its_holder_and_refuses_a_second_run(tmp_path):
    with FolderLock(tmp_path / "out", purpose="lacss predict"):
        record = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"] and record["purpose"] == "lacss predict"
        with pytest.raises(FolderLockedError, match=rf"in use by another run.*pid {os.getpid()}"):
            FolderLock(tmp_path / "out").acquire()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "then"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_respected_and_explained(tmp_path):
    other = {"pid": 1, "host": "some-other-machine", "started": "now", "purpose": "lacss predict"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(FolderLockedError, match=f"some-other-machine.*delete {tmp_path}"):
        FolderLock(tmp_path).acquire()


def test_an_empty_lock_file_that_stays_empty_is_stale(tmp_path, monkeypatch):
    import lacss_core._lock as lock_module

    monkeypatch.setattr(lock_module, "_UNREADABLE_GRACE_S", 0.05)
    (tmp_path / LOCK_NAME).write_text("")
    with FolderLock(tmp_path):
        pass

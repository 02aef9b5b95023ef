"""Zarr in and out, block by block, in process and on a Dask LocalCluster (tiny preset).

The issue asks for 4096^2 images; CI runs 512^2 with 128 px blocks (16 blocks, each with tiles
and cells crossing block edges), which exercises the same code at a fraction of the cost. The
reference is ``predict_instances`` on the whole image in memory (the in-process tiler); blockwise
results must give the same cells (masks matched by IoU, numbering aside), and every blockwise
run (in process, 2 Dask workers, a worker killed mid-run, an interrupted run resumed) the same
label image, bit for bit.
"""

import csv
import os
import signal

import keras
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("dask.distributed")

from lacss_core import blockwise, cli  # noqa: E402
from lacss_core.blockwise import predict_zarr  # noqa: E402
from lacss_core.data import SyntheticSlide  # noqa: E402
from lacss_core.predict import predict_instances  # noqa: E402

SIZE, BLOCK = 512, 128
# random tiny weights score every pixel 0.008-0.014: this keeps a few hundred proposals
MIN_SCORE = 0.012


@pytest.fixture(scope="module")
def model():
    from lacss_core.models import Lacss

    keras.utils.set_random_seed(0)
    model = Lacss.from_preset("lacss_tiny", min_score=MIN_SCORE)
    model.build((None, None, None, 1))
    return model


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "slide.zarr"
    SyntheticSlide(SIZE, seed=0).write_zarr(path, chunk=BLOCK)  # uint16, 256 cells
    return str(path)


@pytest.fixture(scope="module")
def reference(model, image_path):
    label, details = predict_instances(model, np.asarray(zarr.open_array(image_path)))
    assert details["saturated_tiles"] == 0 and 100 < label.max() < 1000
    return label, details


@pytest.fixture(scope="module")
def blockwise_label(model, image_path, tmp_path_factory):
    """The in-process blockwise result: (label array, summary, output path)."""
    out = tmp_path_factory.mktemp("blockwise") / "slide_label.zarr"
    summary = predict_zarr(model, image_path, out, block_size=BLOCK, progress=False)
    return np.asarray(zarr.open_array(str(out))), summary, out


def matched_iou(a, b) -> np.ndarray:
    """For every cell of label ``a``, the IoU of the cell of ``b`` that overlaps it most."""
    both = (a > 0) | (b > 0)
    pairs = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(pairs, (a[both], b[both]), 1)
    inter = pairs[1:, 1:]
    sizes_a, sizes_b = pairs[1:, :].sum(1), pairs[:, 1:].sum(0)
    best = inter.argmax(1)
    overlap = inter[np.arange(len(best)), best]
    return overlap / (sizes_a + sizes_b[best] - overlap)


def test_blockwise_zarr_equals_in_memory_tiled_predict(reference, blockwise_label):
    label, details = reference
    out, summary, path = blockwise_label
    array = zarr.open_array(str(path))
    assert array.dtype == np.int32 and array.chunks == (BLOCK, BLOCK)
    assert array.compressors  # compressed chunks
    assert summary["cells"] == out.max() == label.max() and summary["blocks"] == 16
    np.testing.assert_array_equal(np.unique(out), np.arange(out.max() + 1))  # unique, no gaps
    assert matched_iou(label, out).min() == 1 and matched_iou(out, label).min() == 1
    with open(summary["table"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["label"]) for r in rows] == list(range(1, out.max() + 1))
    areas = np.bincount(out.ravel())[1:]
    np.testing.assert_array_equal([int(r["area"]) for r in rows], areas)
    np.testing.assert_allclose(
        sorted(float(r["score"]) for r in rows), np.sort(details["scores"]), rtol=1e-5
    )
    # cells cross block edges (else the seams would not be tested), each painted whole
    crossing = sum(
        int(r[f"bbox_{a}0"]) // BLOCK != (int(r[f"bbox_{a}1"]) - 1) // BLOCK
        for r in rows
        for a in "yx"
    )
    assert crossing >= 5


@pytest.mark.filterwarnings("ignore:Call to deprecated class Scaler:DeprecationWarning")
def test_ome_zarr_level0_and_planes(model, image_path, blockwise_label, tmp_path):
    from ome_zarr.writer import write_image

    plane = np.asarray(zarr.open_array(image_path))
    stack = np.stack([np.zeros_like(plane), plane])  # ZYX: plane 1 is the slide
    group = zarr.open_group(str(tmp_path / "stack.ome.zarr"), mode="w")
    write_image(stack, group, axes="zyx", scale_factors=[2])
    with pytest.raises(ValueError, match=r"is a stack \(Z=2.*plane"):
        predict_zarr(model, tmp_path / "stack.ome.zarr", tmp_path / "x.zarr", block_size=BLOCK)
    out = tmp_path / "stack_label.zarr"
    predict_zarr(model, tmp_path / "stack.ome.zarr", out, plane=1, block_size=BLOCK)
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], blockwise_label[0])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_blockwise_normalisation_is_the_whole_image_s(model, tmp_path, dtype):
    from lacss_core.data.normalize import normalize_image

    rng = np.random.default_rng(1)
    raw = (rng.gamma(2.0, 300.0, (200, 150)) + rng.integers(0, 3, (200, 150))).astype(dtype)
    path = tmp_path / "raw.zarr"
    zarr.create_array(str(path), data=raw, chunks=(64, 64))
    for method in ("percentile", "range", "standard"):
        out = tmp_path / f"{method}_label.zarr"
        job, _, identity = blockwise.prepare_job(model, "m", str(path), out, block_size=96)
        blockwise.start(job, identity, overwrite=False)  # 3 x 2 blocks, edge blocks cut short
        job = blockwise._with_stats(job, method, lambda f, items: [f(i) for i in items],
                                    job.plan.blocks())  # fmt: skip
        np.testing.assert_allclose(
            blockwise.prepare(job, raw[..., None]), normalize_image(raw[..., None], method),
            rtol=0, atol=1e-6,
        )  # fmt: skip


def test_predict_instances_reads_zarr_whole(model, image_path, reference):
    label, _ = predict_instances(model, image_path)
    np.testing.assert_array_equal(label, reference[0])
    label, _ = predict_instances(model, zarr.open_array(image_path))
    np.testing.assert_array_equal(label, reference[0])
    with pytest.raises(ValueError, match="is a path but not a zarr array"):
        predict_instances(model, "cells.tif")


def test_bad_inputs_are_refused_by_name(model, image_path, tmp_path):
    out = tmp_path / "out.zarr"
    (tmp_path / "plain").mkdir()
    (tmp_path / "image.tif").write_bytes(b"II*\x00")
    for bad in (tmp_path / "plain", tmp_path / "image.tif"):
        with pytest.raises(ValueError, match="is not a zarr array or OME-Zarr image"):
            predict_zarr(model, bad, out)
    with pytest.raises(ValueError, match="no such zarr"):
        predict_zarr(model, tmp_path / "missing.zarr", out)
    with pytest.raises(ValueError, match="block_size must be an int >= 72 px"):
        predict_zarr(model, image_path, out, block_size=32)  # 1 crop size
    with pytest.raises(ValueError, match="chunk must be a positive int that divides"):
        predict_zarr(model, image_path, out, block_size=BLOCK, chunk=100)
    with pytest.raises(ValueError, match="scale must be 1"):
        predict_zarr(model, image_path, out, block_size=BLOCK, scale=2.0)
    with pytest.raises(ValueError, match="min_score"):
        predict_zarr(model, image_path, out, block_size=BLOCK, min_score=2)
    with pytest.raises(ValueError, match="random weights"):
        blockwise.load_model_spec("lacss_tiny")  # a preset: each worker would draw its own
    assert not out.exists()


def test_interrupted_run_resumes_and_skips_finished_blocks(
    model, image_path, blockwise_label, tmp_path, monkeypatch
):
    out = tmp_path / "slide_label.zarr"
    real = blockwise.block_cells

    def fail_at_block_5(job, block):
        if block == (1, 1):
            raise RuntimeError("interrupted")
        return real(job, block)

    monkeypatch.setattr(blockwise, "block_cells", fail_at_block_5)
    with pytest.raises(RuntimeError, match="interrupted"):
        predict_zarr(model, image_path, out, block_size=BLOCK, progress=False)
    monkeypatch.setattr(blockwise, "block_cells", real)
    summary = predict_zarr(model, image_path, out, block_size=BLOCK, progress=False)
    assert (summary["skipped"], summary["computed"]) == (5, 11)  # blocks (0, 0) .. (1, 0) kept
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], blockwise_label[0])
    assert predict_zarr(model, image_path, out, block_size=BLOCK) == summary  # complete: no work
    with pytest.raises(ValueError, match="other settings.*min_area.*overwrite"):
        predict_zarr(model, image_path, out, block_size=BLOCK, min_area=30)
    with pytest.raises(ValueError, match="other settings.*augment.*overwrite"):
        predict_zarr(model, image_path, out, block_size=BLOCK, augment=True)


class KillOnce(distributed.WorkerPlugin):
    """Kill the worker process (SIGKILL) as it starts its first cell-finding task, once in the
    whole cluster: the first worker to create ``marker`` dies."""

    def __init__(self, marker):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "block_cells" in str(key):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_distributed_matches_single_process_and_survives_a_killed_worker(
    client, model_path, image_path, blockwise_label, tmp_path
):
    from lacss_core import distributed_predict

    expected = blockwise_label[0]
    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(str(marker)), name="kill-once")
    try:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2
        out = tmp_path / "a_label.zarr"
        summary = distributed_predict(image_path, model_path, out, client=client, block_size=BLOCK)
        assert marker.exists() and set(client.run(os.getpid).values()) != pids  # one died
    finally:
        client.unregister_worker_plugin("kill-once")
    assert summary["cells"] == expected.max() and summary["computed"] == 16
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], expected)
    loads = list(client.run(blockwise.loaded_models).values())
    assert max(loads) == 1  # each worker process loads the model once, for all its blocks


def test_cli_zarr_in_process_and_on_dask(client, model_path, image_path, reference, tmp_path):
    labels = []
    for name, extra in (("local", []), ("dask", ["--dask", client.scheduler.address])):
        out = tmp_path / name
        argv = ["predict", model_path, image_path, "-o", str(out), "--block-size", "256"]
        assert cli.main(argv + extra) == 0
        labels.append(zarr.open_array(str(out / "slide_label.zarr"))[:])
        with open(out / "slide_cells.csv") as f:
            assert len(f.read().splitlines()) == labels[-1].max() + 1
    np.testing.assert_array_equal(labels[0], labels[1])
    assert matched_iou(reference[0], labels[0]).min() == 1  # 4 blocks of 256: the same cells
    assert cli.main(argv) == 0  # complete: skipped
    tif = tmp_path / "x.tif"
    tif.write_bytes(b"II*\x00")
    assert cli.main(["predict", model_path, str(tif), "-o", str(tmp_path / "o"), "--dask"]) == 2

"""``distributed_predict``: blockwise prediction of a zarr image on a Dask cluster.

The passes of ``lacss_core.blockwise`` become Dask tasks, one per block: Dask schedules them,
moves them off a worker that died (its tasks run again elsewhere; every block writes the same
bytes whenever it runs, into its own chunks and files), and the job folder's per-block files let a
rerun of an interrupted job skip the blocks already done. Each worker process loads the model
once (``blockwise.model_for`` keeps it) and reuses its compiled functions for every block.

With no ``client``, a ``dask.distributed.LocalCluster`` of worker *processes* (one thread each:
the model's own kernels use the cores) is started on this machine and closed at the end; with a
``Client`` or a scheduler address, the job runs on that cluster (``docs/large_images.md``:
SLURM with dask-jobqueue, Kubernetes with dask-kubernetes). Every worker must see the image, the
model file and the output folder at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

from lacss_core import blockwise

DEFAULT_BLOCK = blockwise.DEFAULT_BLOCK


def distributed_predict(image, model_path, output, *, client=None, block_size=DEFAULT_BLOCK,
                        chunk=None, plane=None, n_workers=None, overwrite=False,
                        **options) -> dict:  # fmt: skip
    """Segment a zarr array / OME-Zarr image on Dask, block by block, into a label zarr.

    Args:
        image: path to a zarr array or OME-Zarr image (level 0), readable by every worker.
        model_path: a ``.keras`` model file or a shipped pretrained model's name (every worker
            loads it once).
        output: path of the label zarr (``(H, W)`` int32, chunked, compressed); the per-cell
            CSV goes beside it and the job's progress into ``.NAME.blocks/`` (see
            ``lacss_core.blockwise.predict_zarr``).
        client: None (a LocalCluster on this machine, ``n_workers`` processes, closed at the
            end), a ``dask.distributed.Client``, or a scheduler address (``"tcp://host:8786"``).
        block_size, chunk, plane, overwrite, options: as ``blockwise.predict_zarr``.
        n_workers: worker processes of the LocalCluster (default ``default_workers()``: half
            the cores, at most 8, since each model's kernels use several cores); ignored with a
            ``client``.
    Returns:
        The summary of ``blockwise.predict_zarr``; the same result as ``predict_zarr`` and,
        up to the numbering of the labels, as ``predict_instances`` on the whole image.
    Raises:
        ValueError: as ``predict_zarr``; also for a ``model_path`` that is a preset (random
            weights would differ between workers).
    """
    model = blockwise.load_model_spec(str(model_path))
    job, method, identity = blockwise.prepare_job(
        model, str(model_path), image, output, plane=plane, block_size=block_size, chunk=chunk,
        **options,
    )  # fmt: skip
    job = _absolute(job)
    blockwise.start(job, identity, overwrite=overwrite)
    with _client(client, n_workers) as dask_client:
        return blockwise.run(job, method, partial(_map, dask_client))


def _absolute(job):
    """Paths made absolute: workers may run in another folder."""
    import dataclasses

    absolute = {
        name: str(Path(getattr(job, name)).resolve()) for name in ("label", "table", "work")
    }
    if Path(job.source).exists():
        absolute["source"] = str(Path(job.source).resolve())
    if Path(job.model).exists():
        absolute["model"] = str(Path(job.model).resolve())
    return dataclasses.replace(job, **absolute)


@contextlib.contextmanager
def _client(client, n_workers):
    """A ``Client``: the one given, one connected to an address, or a new LocalCluster's."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError(
            "distributed prediction needs Dask: pip install 'lacss-core[dask]'"
        ) from e
    if isinstance(client, Client):
        yield client
        return
    if client is not None:
        with Client(str(client)) as connected:
            yield connected
        return
    n_workers = default_workers() if n_workers is None else n_workers
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as local:  # fmt: skip
        yield local


def default_workers() -> int:
    """Worker processes of a LocalCluster: half the cores, at least 1, at most 8."""
    import os

    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _map(client, function, blocks):
    """Run ``function(block)`` for every block on the cluster; results in block order.

    ``pure=False``: a rerun must run again (the per-block files decide what is skipped), and
    the keys name the pass and block so the dashboard says what runs.
    """
    if not blocks:
        return []
    name = getattr(function.func, "__name__", "block")
    token = blockwise.digest(function.args[0].work)  # two jobs on one cluster never share keys
    keys = [f"lacss-{name}-{i}-{j}-{token}" for i, j in blocks]
    futures = client.map(function, blocks, key=keys, pure=False)
    return client.gather(futures)


__all__ = ["distributed_predict"]

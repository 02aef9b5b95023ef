"""napari writer: a Labels layer to the label TIFF that ``lacss predict`` writes."""

from __future__ import annotations

import numpy as np


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """Write a 2-D Labels layer with :func:`lacss_core.export.write_label_tiff`.

    ``data`` is the layer's ``(H, W)`` integer array (values kept: 0 = background, cells > 0);
    the file is uint16 when the largest label fits, else uint32. Returns ``[path]``.

    A layer the format cannot hold (not 2-D, negative labels, labels beyond uint32) is not
    written: an error notification names the problem and the result is ``[]`` (napari takes a
    ``ValueError`` from a writer to mean "not my format" and would drop its message).
    """
    from lacss_core import export

    label = np.asarray(data[0] if attributes.get("multiscale") else data)
    problem = unwritable(label, attributes.get("name", "labels"))
    if problem:
        from napari.utils.notifications import show_error

        show_error(problem)
        return []
    export.write_label_tiff(path, label)
    return [path]


def unwritable(label: np.ndarray, name: str) -> str | None:
    """Why ``label`` cannot be a LACSS label TIFF, or None if it can."""
    if label.ndim != 2:
        return (
            f"Labels layer {name!r} has shape {label.shape}; the LACSS label TIFF holds one "
            "(H, W) image: save a single plane"
        )
    if label.size and label.min() < 0:
        return f"Labels layer {name!r} has negative labels; a label TIFF cannot hold them"
    if label.size and label.max() >= 2**32:
        return f"Labels layer {name!r} has labels >= 2**32; relabel it first"
    return None

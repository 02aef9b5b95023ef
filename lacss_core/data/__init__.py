"""Training data: samples, converters, file loaders, normalisation, augmentation, synthetic cells
(simple ones for tests and the demo, realistic microscopy in ``lacss_core.data.realistic``).

Everything here is NumPy/SciPy only, except :class:`LacssDataset` (a ``keras.utils.PyDataset``),
which is imported lazily so that ``import lacss_core.data`` does not load Keras.
"""

from lacss_core.data.augment import (
    AugmentParams,
    apply_augmentation,
    augment,
    draw_params,
    fit_to_size,
    transform_points,
)
from lacss_core.data.axes import Planes, image_axes, split_planes
from lacss_core.data.io import (
    StackError,
    load_labelled_folder,
    load_point_folder,
    read_image,
    read_label,
    read_mask,
    read_planes,
    read_points,
)
from lacss_core.data.normalize import normalize_image
from lacss_core.data.realistic import RealisticCells, RealisticConfig, realistic_cells, render_scene
from lacss_core.data.samples import (
    Sample,
    batch_samples,
    drop_excess_labels,
    label_to_locations,
    label_to_mask,
    pad_locations,
    relabel_sequential,
)
from lacss_core.data.slide import SyntheticSlide
from lacss_core.data.synthetic import SyntheticCells, synthetic_cells


def __getattr__(name):
    if name == "LacssDataset":
        from lacss_core.data.dataset import LacssDataset

        return LacssDataset
    raise AttributeError(f"module 'lacss_core.data' has no attribute {name!r}")


__all__ = [
    "AugmentParams",
    "LacssDataset",
    "Planes",
    "RealisticCells",
    "RealisticConfig",
    "Sample",
    "StackError",
    "SyntheticCells",
    "SyntheticSlide",
    "apply_augmentation",
    "augment",
    "batch_samples",
    "draw_params",
    "drop_excess_labels",
    "fit_to_size",
    "image_axes",
    "label_to_locations",
    "label_to_mask",
    "load_labelled_folder",
    "load_point_folder",
    "normalize_image",
    "pad_locations",
    "read_image",
    "read_label",
    "read_mask",
    "read_planes",
    "read_points",
    "realistic_cells",
    "relabel_sequential",
    "render_scene",
    "split_planes",
    "synthetic_cells",
    "transform_points",
]

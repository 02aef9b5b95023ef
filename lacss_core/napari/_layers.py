"""Between napari layers and lacss-core arrays: image planes, training samples, result layers.

napari's axis convention: the last two data axes of a layer are ``(y, x)`` (an RGB(A) image has
one more, the colour channel, last); any axes before them are a stack (z, time, ...). LACSS
segments 2-D images, so a stack is handled plane by plane: ``planes[k]`` is the plane at the
stack index ``np.unravel_index(k, stack_shape)``.
"""

from __future__ import annotations

import numpy as np


def layer_array(layer) -> np.ndarray:
    """The layer's full-resolution data as a NumPy array (level 0 of a multiscale layer)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def image_planes(layer) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """``(planes, stack_shape)`` of an Image layer: ``(H, W)`` grey or ``(H, W, C)`` RGB(A)
    planes, ``prod(stack_shape)`` of them (``stack_shape`` is ``()`` for one 2-D image)."""
    data = layer_array(layer)
    plane_ndim = 3 if layer.rgb else 2
    if data.ndim < plane_ndim:
        raise ValueError(f"image layer {layer.name!r} has shape {data.shape}: not an image")
    stack_shape = data.shape[: data.ndim - plane_ndim]
    flat = data.reshape((-1,) + data.shape[data.ndim - plane_ndim :])
    return list(flat), tuple(stack_shape)


def plane_shape(layer) -> tuple[int, int]:
    """``(H, W)`` of an Image layer's planes."""
    data = layer_array(layer)
    return tuple(data.shape[-3:-1] if layer.rgb else data.shape[-2:])


def transform_of(layer) -> dict:
    """Layer keyword arguments that place a result layer exactly over ``layer``."""
    ndim = layer.ndim
    return {
        "scale": tuple(layer.scale)[-ndim:],
        "translate": tuple(layer.translate)[-ndim:],
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


# ---------------------------------------------------------------------------- layer choosers
def layer_choices(viewer, *kinds) -> list:
    """``(name, layer)`` of the viewer's layers of these types, for a ComboBox."""
    return [(layer.name, layer) for layer in viewer.layers if is_kind(layer, *kinds)]


def is_kind(layer, *kinds) -> bool:
    """Whether ``layer`` is one of these napari layer types (``"image"``, ``"labels"``, ...)."""
    import napari.layers

    classes = tuple(getattr(napari.layers, kind.capitalize()) for kind in kinds)
    return isinstance(layer, classes)


def follow_layers(widget) -> None:
    """Refresh ``widget``'s choosers whenever layers are added, removed or reordered."""
    from lacss_core.napari._run import connect_while_alive

    events = widget.viewer.layers.events
    changes = (events.inserted, events.removed, events.reordered)
    connect_while_alive(widget, [(event, widget.reset_choices) for event in changes])
    widget.reset_choices()


# ---------------------------------------------------------------------------- results
def result_layers(image_layer, results, stack_shape) -> tuple[np.ndarray, np.ndarray, dict]:
    """Combine per-plane ``(label, details)`` of ``predict_instances`` for the result layers.

    Returns:
        ``labels``: ``stack_shape + (H, W)`` int32 (each plane numbered 1..n by descending score);
        ``points``: ``(N, len(stack_shape) + 2)`` float32 cell locations (stack index, y, x);
        ``features``: ``{"label", "score", "area", "saturated"}`` arrays of length ``N``, row
        ``i`` the cell at ``points[i]`` (``saturated``: found in a tile that held the model's
        full capacity, where cells may be missing).
    """
    labels = np.stack([label for label, _ in results]).reshape(stack_shape + results[0][0].shape)
    rows, features = [], {"label": [], "score": [], "area": [], "saturated": []}
    for k, (_, details) in enumerate(results):
        index = np.unravel_index(k, stack_shape) if stack_shape else ()
        locations = np.asarray(details["locations"], np.float32).reshape(-1, 2)
        lead = np.broadcast_to(np.asarray(index, np.float32), (len(locations), len(index)))
        rows.append(np.concatenate([lead, locations], axis=1))
        features["label"].append(np.arange(1, len(locations) + 1, dtype=np.int32))
        features["score"].append(np.asarray(details["scores"], np.float32))
        features["area"].append(np.asarray(details["areas"], np.int32))
        features["saturated"].append(np.asarray(details["saturated"], bool))
    points = np.concatenate(rows).astype(np.float32)
    return labels, points, {key: np.concatenate(values) for key, values in features.items()}


# ---------------------------------------------------------------------------- training samples
def full_samples(image_layer, labels_layer) -> tuple[list, int]:
    """Fully supervised ``Sample`` s: every plane of ``image_layer`` with its label plane.

    Planes with no labelled cell are not annotated and are left out. Returns
    ``(samples, planes)``, ``planes`` the number of image planes.
    """
    from lacss_core.data import Sample

    planes, stack_shape = image_planes(image_layer)
    labels = layer_array(labels_layer)
    expected = stack_shape + plane_shape(image_layer)
    if labels.shape != expected:
        raise ValueError(
            f"labels layer {labels_layer.name!r} has shape {labels.shape} but image "
            f"{image_layer.name!r} needs {expected}"
        )
    labels = labels.reshape((-1,) + labels.shape[-2:])
    samples = [
        Sample(plane, label=label, name=_plane_name(image_layer, k, stack_shape))
        for k, (plane, label) in enumerate(zip(planes, labels, strict=True))
        if label.any()
    ]
    if not samples:
        raise ValueError(f"labels layer {labels_layer.name!r} has no labelled cell")
    return samples, len(planes)


def weak_samples(image_layer, points_layer, foreground_layer) -> tuple[list, int]:
    """Weakly supervised ``Sample`` s: one click per cell plus a foreground mask, per plane.

    ``points_layer`` holds one point per cell (its coordinates are mapped into the image's pixels
    through both layers' transforms); ``foreground_layer`` is a Labels layer (nonzero =
    foreground) or a Shapes layer (inside a shape = foreground). Planes without points are left
    out. Returns ``(samples, planes)``.
    """
    from lacss_core.data import Sample

    planes, stack_shape = image_planes(image_layer)
    shape = plane_shape(image_layer)
    points = points_in_image(points_layer, image_layer)
    mask = foreground_mask(foreground_layer, stack_shape + shape).reshape((-1,) + shape)
    flat = _plane_index(points[:, :-2], stack_shape, points_layer.name)
    samples = []
    for k, plane in enumerate(planes):
        locations = points[flat == k, -2:]
        if len(locations) == 0:
            continue
        if not mask[k].any():
            raise ValueError(
                f"foreground layer {foreground_layer.name!r} is empty on "
                f"{_plane_name(image_layer, k, stack_shape)}, which has points"
            )
        name = _plane_name(image_layer, k, stack_shape)
        samples.append(Sample(plane, locations=locations, mask=mask[k], name=name))
    if not samples:
        raise ValueError(f"points layer {points_layer.name!r} has no points: click one per cell")
    return samples, len(planes)


def points_in_image(points_layer, image_layer) -> np.ndarray:
    """``(N, D)`` float32 points in the image layer's data coordinates, ``(y, x)`` clamped into
    the image when they lie within half a pixel of its border (a click on a border pixel)."""
    data = np.asarray(points_layer.data, np.float64)
    if data.shape[1] != image_layer.ndim:
        raise ValueError(
            f"points layer {points_layer.name!r} has {data.shape[1]} coordinates per point but "
            f"image {image_layer.name!r} has {image_layer.ndim} dimensions"
        )
    mapped = np.array(
        [image_layer.world_to_data(points_layer.data_to_world(p)) for p in data], np.float64
    ).reshape(data.shape)
    upper = np.asarray(plane_shape(image_layer), np.float64) - 1
    yx = mapped[:, -2:]
    outside = np.any((yx < -0.5) | (yx > upper + 0.5), axis=1)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise ValueError(
            f"point {i} of layer {points_layer.name!r} at {tuple(np.round(data[i], 1))} lies "
            f"outside image {image_layer.name!r}"
        )
    mapped[:, -2:] = np.clip(yx, 0, upper)
    return mapped.astype(np.float32)


def foreground_mask(layer, shape) -> np.ndarray:
    """``shape`` bool foreground from a Labels layer (nonzero) or a Shapes layer (inside)."""
    if is_kind(layer, "shapes"):
        if len(layer.data) == 0:
            raise ValueError(f"shapes layer {layer.name!r} has no shapes; draw the foreground")
        return layer.to_labels(labels_shape=shape) > 0
    mask = layer_array(layer)
    if mask.shape != tuple(shape):
        raise ValueError(
            f"foreground layer {layer.name!r} has shape {mask.shape}, the image needs {shape}"
        )
    return mask != 0


def _plane_index(lead, stack_shape, name) -> np.ndarray:
    """Flat plane index of each point from its leading (stack) coordinates."""
    if not stack_shape:
        return np.zeros(len(lead), np.int64)
    index = np.round(lead).astype(np.int64)
    bad = np.any((index < 0) | (index >= np.asarray(stack_shape)), axis=1)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"point {i} of layer {name!r} lies outside the image stack")
    return np.ravel_multi_index(index.T, stack_shape)


def _plane_name(layer, k, stack_shape) -> str:
    if not stack_shape:
        return f"image {layer.name!r}"
    index = tuple(int(i) for i in np.unravel_index(k, stack_shape))
    return f"plane {index} of image {layer.name!r}"

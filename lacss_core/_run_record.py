"""What a training run is: the record a checkpoint folder keeps so that only the same run resumes.

``train()`` writes :func:`run_record` into ``state.json`` with every checkpoint. Resuming compares
the record of the new call with the stored one (:func:`differences`): the model's architecture
(its config, less the prediction-only and execution-only entries such as ``data_format``), the
optimizer, the seed and the training data (settings and a content hash of the
samples, or what the data object says about itself through a ``fingerprint()`` method), plus any
``run_info`` the caller adds (the CLI adds its options). Steps, checkpoint and validation
intervals are not part of it: raising ``steps`` continues a finished run.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def run_record(model, optimizer, train_data, seed, run_info=None) -> dict:
    """A JSON-able description of the run, compared key by key on resume."""
    config = dict(model.get_config())
    config.pop("name", None)  # Keras numbers the names of models built in one process
    for key in getattr(model, "PREDICTION_SETTINGS", ()):  # not training: recorded from data
        config.pop(key, None)
    for key in getattr(model, "EXECUTION_SETTINGS", ()):  # same weights, same numbers
        config.pop(key, None)
    return _plain(
        {
            "model": {"class": type(model).__name__, "config": config},
            "optimizer": _optimizer_record(optimizer),
            "seed": seed,
            "data": data_fingerprint(train_data),
            "run_info": run_info or {},
        }
    )


def _optimizer_record(optimizer) -> dict:
    config = optimizer.get_config()
    config.pop("name", None)
    return {"class": type(optimizer).__name__, "config": config}


def data_fingerprint(data) -> dict:
    """``data.fingerprint()`` if it has one, else its type and length."""
    fingerprint = getattr(data, "fingerprint", None)
    if callable(fingerprint):
        return fingerprint()
    return {"type": type(data).__qualname__, "batches": len(data)}


def samples_fingerprint(samples) -> dict:
    """Count, names and a SHA-256 of every sample's arrays (image, label, locations, mask);
    a sequence with its own ``fingerprint()`` (e.g. ``SyntheticCells``) describes itself."""
    fingerprint = getattr(samples, "fingerprint", None)
    if callable(fingerprint):
        return fingerprint()
    digest = hashlib.sha256()
    names = []
    for sample in samples:
        names.append(sample.name)
        for field in ("image", "label", "locations", "mask"):
            array = getattr(sample, field)
            if array is None:
                digest.update(f"{field}:none;".encode())
                continue
            array = np.ascontiguousarray(array)
            digest.update(f"{field}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    return {"count": len(names), "names": names, "sha256": digest.hexdigest()}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every leaf where two records differ (short reprs)."""
    found = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, name + ".")
        elif a != b:
            found.append(f"{name}: {_short(a)} -> {_short(b)}")
    return found


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if isinstance(value, list) and len(text) > limit:
        return f"[{len(value)} items]"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value):
    """Tuples to lists and NumPy scalars to Python, as JSON would store them."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


__all__ = ["data_fingerprint", "differences", "run_record", "samples_fingerprint"]

"""Argument checks shared by the oracle, the ops, the models and the data pipeline.

Bad input raises ``ValueError`` naming the argument and what it must be. Only the standard
library and NumPy are imported here (no Keras, no SciPy), so ``lacss_core.ops`` and
``lacss_core.models`` use these checks without importing the reference ``lacss_core.oracle``, and
the oracle uses them without importing Keras. Checks of array shapes live with the arrays' users:
``lacss_core.ops._common`` for backend tensors, ``lacss_core.oracle._checks`` for NumPy arrays.

Python's ``bool`` is an ``int`` subclass; every check here refuses it where a number is meant
(``crop_size=True`` is a mistake, not ``1``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def is_int(value) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for Python and NumPy real numbers (ints and floats, finite or not), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_requirement(minimum: int | None) -> str:
    if minimum is None:
        return "an int"
    if minimum == 1:
        return "a positive int"
    if minimum == 0:
        return "a non-negative int"
    return f"an int >= {minimum}"


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python int if it is an integer (not a bool) ``>= minimum``.

    Raises ``ValueError("NAME must be a positive int, got VALUE")`` (or "a non-negative int",
    "an int >= MINIMUM", "an int", after ``minimum``) otherwise.
    """
    if not is_int(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be {_int_requirement(minimum)}, got {value!r}")
    return int(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool if it is True or False (also NumPy's; not 0, 1 or a string), else
    ``ValueError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def positive_int(value, name: str) -> int:
    """``value`` as an int ``>= 1``, else ``ValueError`` naming ``name``."""
    return check_int(value, name, minimum=1)


def non_negative_int(value, name: str) -> int:
    """``value`` as an int ``>= 0``, else ``ValueError`` naming ``name``."""
    return check_int(value, name, minimum=0)


def positive_ints(values, name: str) -> tuple[int, ...]:
    """A non-empty sequence of positive ints as a tuple, else ``ValueError`` naming ``name``."""
    try:
        items = tuple(values)
    except TypeError:
        items = ()
    if not items or not all(is_int(v) and v >= 1 for v in items):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {values!r}")
    return tuple(int(v) for v in items)


def image_shape(value, name: str = "image_shape") -> tuple[int, int]:
    """``(H, W)`` of positive ints, else ``ValueError`` naming ``name``."""
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != 2:
        raise ValueError(f"{name} must be (H, W), got {value!r}")
    height, width = (positive_int(s, name) for s in items)
    return height, width


def is_crop_size(value) -> bool:
    """True for a valid patch size ``c``: an int that is a positive multiple of 4 (SPEC 2)."""
    return is_int(value) and value >= 4 and value % 4 == 0


def crop_size(value, name: str = "crop_size") -> int:
    """The patch size ``c`` as an int: a positive multiple of 4 (SPEC 2), else ``ValueError``."""
    if not is_crop_size(value):
        raise ValueError(f"{name} must be a positive multiple of 4, got {value!r}")
    return int(value)


def _real(value, name: str, requirement: str) -> float:
    """``value`` as a float if it is a real number (or a 0-d NumPy array of one), not a bool."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
        value = value.item()
    if not is_number(value):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return float(value)


def finite_number(value, name: str) -> float:
    """``value`` as a finite float, else ``ValueError`` naming ``name``."""
    v = _real(value, name, "a finite number")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def non_negative(value, name: str) -> float:
    """``value`` as a finite float ``>= 0``, else ``ValueError`` naming ``name``."""
    v = _real(value, name, "a finite number >= 0")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def positive_number(value, name: str) -> float:
    """``value`` as a finite float ``> 0``, else ``ValueError`` naming ``name``."""
    v = _real(value, name, "a finite number > 0")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v

"""The shared argument checks (``lacss_core._validation``) and the import boundary they enable."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from lacss_core import _validation as v

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lacss_core"


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_python_and_numpy_ints(value):
    got = v.positive_int(value, "n")
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize("value", [0, -1, True, 1.0, "1", None, np.float32(2)])
def test_positive_int_names_the_argument(value):
    with pytest.raises(ValueError, match=r"^n must be a positive int, got "):
        v.positive_int(value, "n")


def test_int_messages_follow_the_minimum():
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        v.non_negative_int(-1, "seed")
    with pytest.raises(ValueError, match="devices must be an int >= 2, got 1"):
        v.check_int(1, "devices", minimum=2)
    with pytest.raises(ValueError, match="level must be an int, got 'a'"):
        v.check_int("a", "level")
    assert v.check_int(-5, "level") == -5


@pytest.mark.parametrize("value", [4, 8, 96, np.int32(24)])
def test_crop_size_accepts_positive_multiples_of_four(value):
    assert v.crop_size(value) == int(value) and v.is_crop_size(value)


@pytest.mark.parametrize("value", [0, -4, 2, 6, 8.0, True, None])
def test_crop_size_rejects_the_rest(value):
    assert not v.is_crop_size(value)
    with pytest.raises(ValueError, match="crop_size must be a positive multiple of 4"):
        v.crop_size(value)


def test_numbers():
    assert v.finite_number(np.float32(0.5), "x") == 0.5
    assert v.finite_number(np.array(2.0), "x") == 2.0  # 0-d arrays are scalars
    assert v.non_negative(0, "x") == 0.0 and v.positive_number(3, "x") == 3.0
    for bad in (True, "1", np.inf, np.nan, None, np.array([1.0])):
        with pytest.raises(ValueError, match="x must be a finite number"):
            v.finite_number(bad, "x")
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -0.5"):
        v.non_negative(-0.5, "alpha")
    with pytest.raises(ValueError, match="delta must be a finite number > 0, got 0"):
        v.positive_number(0, "delta")


def test_shapes_and_int_lists():
    assert v.image_shape((3, np.int64(4))) == (3, 4)
    for bad in ((3,), (3, 0), 5, (3, 4, 5)):
        with pytest.raises(ValueError, match="image_shape"):
            v.image_shape(bad)
    assert v.positive_ints([1, 2], "widths") == (1, 2)
    for bad in ([], [1, 0], [True], 3):
        with pytest.raises(ValueError, match="widths must be a non-empty list of positive ints"):
            v.positive_ints(bad, "widths")


def _imported_modules(path: pathlib.Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("package", ["ops", "models"])
def test_production_code_does_not_import_the_oracle(package):
    """The reference is for checking, not running: ``lacss_core.ops`` and ``lacss_core.models``
    share their checks through ``lacss_core._validation``, never ``lacss_core.oracle``."""
    for path in sorted((PACKAGE / package).glob("*.py")):
        bad = {m for m in _imported_modules(path) if m.startswith("lacss_core.oracle")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_importing_the_model_leaves_the_oracle_unloaded():
    code = "import sys, lacss_core.models, lacss_core.ops; "
    code += "print('lacss_core.oracle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_validation_imports_neither_keras_nor_scipy():
    assert {m.split(".")[0] for m in _imported_modules(PACKAGE / "_validation.py")} <= {
        "__future__",
        "math",
        "numbers",
        "numpy",
    }

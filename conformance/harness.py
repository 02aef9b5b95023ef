"""Run an ``lacss_core.ops`` function and its oracle twin on the same inputs and compare.

A test case is one line: ``assert_conforms("nms", (locs, scores), dict(max_output=8, ...), mode)``.
NumPy arrays among the positional arguments are the dynamic inputs (converted to backend tensors:
floats to float32, integers to int32); everything else (sizes, thresholds) is static and passed
as is, exactly as the model passes it. Each comparison is recorded for the runner's table when
``LACSS_CONFORMANCE_REPORT`` names a JSON-lines file.
"""

from __future__ import annotations

import json
import os

import numpy as np
from keras import ops as kops

from lacss_core import _backend, ops, oracle

from . import tolerances as tol

_BACKEND = _backend.current()
BACKEND = _BACKEND.name


# ----------------------------------------------------------------------------- environment
def modes() -> list[str]:
    """Modes for the current backend: eager always, plus its compiled mode (``jit`` on JAX,
    ``compile`` on torch) where it works: torch.compile is on by default when a C++ compiler is on
    PATH (inductor needs one on the CPU); ``LACSS_TORCH_COMPILE=0`` or ``1`` forces it off or on.
    """
    return ["eager", _BACKEND.compile_mode] if _BACKEND.compile_available() else ["eager"]


def device_kind() -> str:
    """``"gpu"`` or ``"cpu"``: where the backend runs."""
    return _BACKEND.device_kind()


def disable_tf32() -> None:
    """Keep float32 matmuls/convs at float32 accuracy on GPUs (TF32 off)."""
    _BACKEND.disable_tf32()


# ----------------------------------------------------------------------------- running
def _to_tensor(a: np.ndarray):
    if a.dtype.kind == "f":
        return kops.convert_to_tensor(a.astype(np.float32))
    if a.dtype.kind in "iu":
        return kops.convert_to_tensor(a.astype(np.int32))
    return kops.convert_to_tensor(a)


def _split(args):
    dynamic = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    return dynamic, [_to_tensor(args[i]) for i in dynamic]


def _merge(args, dynamic, tensors):
    merged = list(args)
    for i, t in zip(dynamic, tensors, strict=True):
        merged[i] = t
    return merged


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _options(mode: str):
    if mode == "eager":
        return _backend.EAGER
    if mode == _BACKEND.compile_mode:
        return _backend.COMPILED
    known = f"eager, {_BACKEND.compile_mode}"
    raise ValueError(f"unknown mode {mode!r} for backend {BACKEND} ({known})")


_CALLABLES: dict = {}


def _callable(name: str, args: tuple, kwargs: dict, mode: str, grad_slot: int | None = None):
    """The op closed over its static arguments, compiled for ``mode``, cached per static key.

    Caching matters: ``jax.jit`` keys its compilation cache on the function object, so a fresh
    closure per call would recompile every hypothesis example even at a fixed shape.
    """
    template = tuple(None if isinstance(a, np.ndarray) else a for a in args)
    key = (name, mode, grad_slot, repr(template), repr(sorted(kwargs.items())))
    if key not in _CALLABLES:
        fn = getattr(ops, name)
        dynamic = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]

        def call(*tensors):
            return fn(*_merge(template, dynamic, tensors), **kwargs)

        if grad_slot is None:
            _CALLABLES[key] = _BACKEND.compile(call, _options(mode))
        else:
            _CALLABLES[key] = _BACKEND.grad(call, grad_slot, _options(mode))
    return _CALLABLES[key]


def run_op(name: str, args: tuple, kwargs: dict | None = None, mode: str = "eager"):
    """Call ``lacss_core.ops.<name>`` in ``mode``; returns a tuple of NumPy arrays."""
    _, tensors = _split(args)
    out = _callable(name, args, kwargs or {}, mode)(*tensors)
    return tuple(kops.convert_to_numpy(o) for o in _as_tuple(out))


def run_oracle(name: str, args: tuple, kwargs: dict | None = None):
    out = getattr(oracle, name)(*args, **(kwargs or {}))
    return tuple(np.asarray(o) for o in _as_tuple(out))


# ----------------------------------------------------------------------------- reporting
def reproducer(name: str, args: tuple, kwargs: dict | None) -> str:
    """Copy-paste Python that reruns the failing case on both implementations."""

    def lit(a):
        if isinstance(a, np.ndarray):
            return f"np.array({a.tolist()!r}, dtype={str(a.dtype)!r})"
        return repr(a)

    arg_src = ", ".join(lit(a) for a in args)
    kw_src = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
    call = f"({arg_src}{', ' if kw_src else ''}{kw_src})"
    return (
        f"\n--- reproducer (KERAS_BACKEND={BACKEND}) ---\n"
        "import numpy as np\nfrom lacss_core import oracle, ops\n"
        f"print(oracle.{name}{call})\nprint(ops.{name}{call})\n"
    )


def _record(**row) -> None:
    path = os.environ.get("LACSS_CONFORMANCE_REPORT")
    if not path:
        return
    row.update(backend=BACKEND, device=device_kind())
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _errors(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    if got.size == 0:
        return 0.0, 0.0
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), 1e-30)
    return float(diff.max()), float(np.where(diff == 0, 0.0, rel).max())


def _tolerance_use(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float):
    """How much of ``atol + rtol * |expected|`` the worst entry uses (``<= 1`` passes, as
    ``np.allclose``), and how many entries pass only thanks to ``atol`` (their error exceeds
    ``rtol * |expected|``)."""
    if got.size == 0:
        return 0.0, 0
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = np.abs(expected.astype(np.float64))
    used = float((diff / (atol + rtol * scale)).max())
    return used, int(np.count_nonzero(diff > rtol * scale))


def _dtype_kind(a: np.ndarray) -> str:
    return {"b": "bool", "i": "int", "u": "int", "f": "float"}[a.dtype.kind]


# ----------------------------------------------------------------------------- assertions
def _compare_and_record(function, output, mode, got, expected, exact, rtol, atol):
    """Compare one output (equal if ``exact``, else within ``rtol``/``atol``), record its row
    in the conformance table, and return ``(ok, max_abs, max_rel, tolerance)``."""
    abs_err, rel_err = _errors(got, expected)
    if exact:
        ok, tolerance = bool(np.array_equal(got, expected)), "exact"
        used, by_atol = (0.0 if ok else None), 0
    else:
        ok = bool(np.allclose(got, expected, rtol=rtol, atol=atol))
        tolerance = f"rtol {rtol:g} atol {atol:g}"
        used, by_atol = _tolerance_use(got, expected, rtol, atol)
    _record(
        function=function,
        output=output,
        mode=mode,
        check="value",
        max_abs=abs_err,
        max_rel=rel_err,
        tolerance=tolerance,
        used=used,
        by_atol=by_atol,
        passed=ok,
    )
    return ok, abs_err, rel_err, tolerance


def assert_conforms(name, args, kwargs=None, mode="eager", *, exact=()):
    """Compare every output of ``ops.<name>`` with ``oracle.<name>``.

    Shapes and dtype kinds are asserted first. Integer and boolean outputs must be equal; float
    outputs whose position is in ``exact`` too (gathered, not computed, values); other floats
    within ``FLOAT_RTOL``/``FLOAT_ATOL``. Float outputs must be float32 on the backend.
    """
    expected = run_oracle(name, args, kwargs)
    got = run_op(name, args, kwargs, mode)
    repro = reproducer(name, args, kwargs)
    assert len(got) == len(expected), f"{name}: {len(got)} outputs, oracle has {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        where = f"{name}[{i}] ({mode})"
        assert g.shape == e.shape, f"{where}: shape {g.shape} != oracle {e.shape}{repro}"
        assert _dtype_kind(g) == _dtype_kind(e), f"{where}: dtype {g.dtype} vs {e.dtype}{repro}"
        if g.dtype.kind == "f":
            assert g.dtype == np.float32, f"{where}: dtype {g.dtype}, expected float32{repro}"
        discrete = g.dtype.kind != "f" or i in exact
        ok, abs_err, rel_err, tolerance = _compare_and_record(
            name, i, mode, g, e, discrete, tol.FLOAT_RTOL, tol.FLOAT_ATOL
        )
        assert ok, (
            f"{where}: max abs err {abs_err:.3g}, max rel err {rel_err:.3g} ({tolerance})\n"
            f"got:\n{g}\noracle:\n{e}{repro}"
        )
    return got


def assert_matches_reference(function, got: dict, expected: dict, mode, *, rtol, atol, exact=()):
    """Compare named outputs ``got`` (NumPy, from the backend) with ``expected`` (a float64
    reference) and record one row per output under ``function``: keys in ``exact`` must be
    equal, the others within ``rtol``/``atol``. For checks beyond one op (the model rows)."""
    assert set(got) == set(expected), f"{function}: outputs {sorted(got)} != {sorted(expected)}"
    failures = []
    for key in sorted(got):
        g, e = np.asarray(got[key]), np.asarray(expected[key])
        assert g.shape == e.shape, f"{function} {key}: shape {g.shape} != reference {e.shape}"
        ok, abs_err, rel_err, tolerance = _compare_and_record(
            function, key, mode, g, e, key in exact, rtol, atol
        )
        if not ok:
            failures.append(f"{key}: max abs {abs_err:.3g}, max rel {rel_err:.3g} ({tolerance})")
    assert not failures, f"{function} ({mode}): " + "; ".join(failures)


def backend_grad(name, args, kwargs, wrt: int, mode: str) -> np.ndarray:
    """Gradient of the scalar ``ops.<name>`` w.r.t. positional argument ``wrt`` (float32)."""
    dynamic, tensors = _split(args)
    slot = dynamic.index(wrt)
    grad_fn = _callable(name, args, kwargs or {}, mode, grad_slot=slot)
    return np.asarray(kops.convert_to_numpy(grad_fn(*tensors)))


def finite_difference(name, args, kwargs, wrt: int, step: float = tol.FD_STEP) -> np.ndarray:
    """Central differences of the float64 oracle w.r.t. positional argument ``wrt``."""
    return _finite_difference(name, args, kwargs, wrt, step)[0]


def _finite_difference(name, args, kwargs, wrt: int, step: float):
    """Central differences and the largest ``|loss|`` evaluated (which bounds their rounding
    error: each difference quotient is off by about ``eps * |loss| / step``)."""
    fn = getattr(oracle, name)
    base = [
        a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
        for a in args
    ]
    x = base[wrt]
    grad = np.zeros_like(x)
    largest = 0.0
    for idx in np.ndindex(x.shape):
        for sign in (1.0, -1.0):
            xs = x.copy()
            xs[idx] += sign * step
            base[wrt] = xs
            value = float(fn(*base, **(kwargs or {})))
            largest = max(largest, abs(value))
            grad[idx] += sign * value / (2 * step)
    base[wrt] = x
    return grad, largest


def grad_atol(expected: np.ndarray, largest_loss: float) -> float:
    """The absolute tolerance of one gradient case: ``GRAD_ATOL_FRACTION`` of the largest
    gradient entry (float32 round-off of entries that are 0 in exact arithmetic), and never less
    than the rounding error of the finite differences themselves
    (``FD_ROUNDING * |loss| / FD_STEP``, which matters only for gradients near 0)."""
    floor = tol.GRAD_ATOL_FRACTION * float(np.abs(expected).max(initial=0.0))
    return max(floor, tol.FD_ROUNDING * largest_loss / tol.FD_STEP, 1e-15)


def assert_grad_conforms(name, args, kwargs=None, mode="eager", *, wrt=0):
    """Backend autodiff of ``ops.<name>`` vs float64 finite differences of the oracle."""
    got = backend_grad(name, args, kwargs, wrt, mode)
    expected, largest_loss = _finite_difference(name, args, kwargs, wrt, tol.FD_STEP)
    where = f"grad {name} wrt arg {wrt} ({mode})"
    repro = reproducer(name, args, kwargs)
    assert got.shape == expected.shape, f"{where}: shape {got.shape} != {expected.shape}{repro}"
    atol = grad_atol(expected, largest_loss)
    ok = bool(np.allclose(got, expected, rtol=tol.GRAD_RTOL, atol=atol))
    abs_err, rel_err = _errors(got, expected)
    used, by_atol = _tolerance_use(got, expected, tol.GRAD_RTOL, atol)
    tolerance = f"rtol {tol.GRAD_RTOL:g} atol {atol:.2g}"
    _record(
        function=name,
        output=f"d/darg{wrt}",
        mode=mode,
        check="grad",
        max_abs=abs_err,
        max_rel=rel_err,
        tolerance=tolerance,
        atol=atol,
        max_grad=float(np.abs(expected).max(initial=0.0)),
        used=used,
        by_atol=by_atol,
        entries=int(expected.size),
        passed=ok,
    )
    assert ok, (
        f"{where}: max abs {abs_err:.3g} max rel {rel_err:.3g} ({tolerance}; {used:.2f} of it "
        f"used, {by_atol} entries within atol only){repro}"
    )
    return got

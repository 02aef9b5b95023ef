"""The conformance runner's report: the tolerance that applied, per case (issue 11, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from lacss_core.conformance import __main__ as runner
from lacss_core.conformance import harness, tolerances


def _row(function="boundary_loss", check="grad", atol=1e-9, used=0.5, by_atol=0, **more):
    row = dict(
        function=function, check=check, backend="jax", mode="eager", device="cpu",
        output="d/darg0", max_abs=(used or 1.0) * atol, max_rel=1e-4, atol=atol, used=used,
        by_atol=by_atol, max_grad=atol / tolerances.GRAD_ATOL_FRACTION, entries=16,
        tolerance=f"rtol {tolerances.GRAD_RTOL:g} atol {atol:.2g}", passed=True,
    )  # fmt: skip
    row.update(more)
    return row


def test_tolerance_use_is_the_share_of_allclose_tolerance_the_worst_entry_takes():
    expected = np.array([1.0, 1e-6, 0.0])
    got = expected + np.array([5e-4, 1.5e-9, 1e-9])  # within rtol; twice within atol only
    used, by_atol = harness._tolerance_use(got, expected, rtol=1e-3, atol=4e-9)
    assert used == pytest.approx(0.5, rel=1e-5)  # 5e-4 of the 1e-3 + 4e-9 allowed at 1.0
    assert by_atol == 2
    assert harness._tolerance_use(got, expected, rtol=1e-3, atol=5e-10)[0] > 1  # allclose fails
    assert not np.allclose(got, expected, rtol=1e-3, atol=5e-10)


def test_grad_atol_is_the_larger_of_the_floor_and_the_finite_differences_rounding():
    grad = np.array([2.0, -4.0])
    assert harness.grad_atol(grad, largest_loss=1.0) == tolerances.GRAD_ATOL_FRACTION * 4.0
    tiny = np.array([4e-9])
    rounding = tolerances.FD_ROUNDING * 0.6 / tolerances.FD_STEP
    assert harness.grad_atol(tiny, largest_loss=0.6) == rounding
    assert rounding < 1e-9  # it only matters for gradients this small


def test_table_reports_atol_range_used_share_and_cases_within_atol_only():
    rows = [
        _row(atol=2e-12, used=0.2),
        _row(atol=4e-9, used=0.9, by_atol=3, max_rel=6.85e-3),
        _row(check="value", used=0.1, tolerance="rtol 1e-05 atol 1e-06"),
        _row(function="gather_patches", check="value", used=0.0, tolerance="exact"),
    ]
    table = {(t["function"], t["check"]): t for t in runner.summarise(rows)}
    grad = table["boundary_loss", "grad"]
    assert grad["tolerance"] == "rtol 0.001, atol 2.0e-12 to 4.0e-09"
    assert grad["used"] == 0.9 and grad["cases_by_atol"] == 1 and grad["cases"] == 2
    assert table["boundary_loss", "value"]["tolerance"] == "rtol 1e-05 atol 1e-06"
    assert table["gather_patches", "value"]["tolerance"] == "exact"

    listed = runner.atol_cases(rows)
    assert [r["used"] for r in listed] == [0.9]
    text = runner.markdown(runner.summarise(rows), listed)
    assert "| used | cases within atol only |" in text
    assert "| boundary_loss | d/darg0 | jax | eager | 4.00e-05 | 4.0e-09 |" in text
    assert "| 3 of 16 | 0.90 |" in text


def test_a_failed_exact_comparison_has_no_share():
    rows = [_row(check="value", used=None, tolerance="exact", passed=False)]
    (row,) = runner.summarise(rows)
    assert row["used"] is None and not row["passed"]
    assert "| n/a |" in runner.markdown([row])

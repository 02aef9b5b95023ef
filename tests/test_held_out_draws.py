"""``benchmarks/held_out_draws.py``, the tool that decides which weights ship: its paired
differences, its merging of parallel runs and its refusal of draws that reuse a run's sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def draws():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import held_out_draws
    finally:
        sys.path.remove(str(BENCHMARKS))
    return held_out_draws


def _metrics(ap50: float, ap75: float = 0.5, f1: float = 0.5) -> dict:
    return {"ap50": ap50, "ap75": ap75, "f1": f1}


# two draws, two models, one modality: B - A is +0.1 then -0.2 in AP50 (mean -0.05, higher on 1)
RESULTS = {
    500: {"A": {"nuclei": _metrics(0.5)}, "B": {"nuclei": _metrics(0.6, ap75=0.6)}},
    1500: {"A": {"nuclei": _metrics(0.8)}, "B": {"nuclei": _metrics(0.6, ap75=0.7)}},
}


def test_paired_differences_are_the_mean_over_draws_and_the_draws_higher(draws):
    lines = draws.paired(RESULTS).splitlines()
    assert lines[0] == "| model - A | nuclei AP50 / AP75 / F1 | mean AP50 / F1 |"
    assert lines[2] == (
        "| B | -0.050 (1/2) / +0.150 (2/2) / +0.000 (0/2) | -0.050 (1/2) / +0.000 (0/2) |"
    )


def test_the_mean_over_draws_is_per_model_modality_and_metric(draws):
    mean = draws.mean_over_draws(RESULTS)
    assert mean["A"]["nuclei"] == pytest.approx(_metrics(0.65))
    assert mean["B"]["nuclei"] == pytest.approx(_metrics(0.6, ap75=0.65))


def test_parallel_runs_merge_by_draw(draws, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({str(d): {"A": r["A"]} for d, r in RESULTS.items()}))
    b.write_text(json.dumps({str(d): {"B": r["B"]} for d, r in RESULTS.items()}))
    assert draws.merge_runs([str(a), str(b)]) == RESULTS


def test_runs_on_other_draws_or_of_the_same_model_are_refused(draws, tmp_path):
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    a.write_text(json.dumps({"500": {"A": {}}}))
    b.write_text(json.dumps({"1500": {"B": {}}}))
    c.write_text(json.dumps({"500": {"A": {}}}))
    with pytest.raises(SystemExit, match="hold different draws"):
        draws.merge_runs([str(a), str(b)])
    with pytest.raises(SystemExit, match=r"repeats model\(s\) \['A'\]"):
        draws.merge_runs([str(a), str(c)])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("generalist", ("generalist", None)), ("m.keras@0.45,0.4,6", ("m.keras", (0.45, 0.4, 6.0)))],
)
def test_a_model_spec_names_its_thresholds(draws, spec, expected):
    assert draws.parse_model(spec) == expected


@pytest.mark.parametrize("spec", ["m.keras@0.45,0.4", "m.keras@a,b,c"])
def test_a_bad_threshold_spec_is_refused_by_name(draws, spec):
    with pytest.raises(SystemExit, match="MIN_SCORE,MASK_THRESHOLD,NMS_PX"):
        draws.parse_model(spec)


def test_a_draw_on_the_runs_own_sets_or_repeated_is_refused(draws):
    script = draws.generalist_script()
    draws.check_draws([3500, 4500], run_seed=0, script=script)  # fresh draws pass
    # draw 2000 tests on seeds 4000-4003: run 0's threshold calibration sets
    with pytest.raises(SystemExit, match="draw 2000: its nuclei test set would use seed 4000"):
        draws.check_draws([2000], run_seed=0, script=script)
    with pytest.raises(SystemExit, match="repeats a seed"):
        draws.check_draws([3500, 3500], run_seed=0, script=script)

"""``examples/train_generalist.py``'s ``--training-seed``: fresh training images for a run that
continues another, never the seed of a held-out set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_generalist.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_generalist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_seed_defaults_to_the_seed(script):
    args = script.parse_args(["--out", "x", "--seed", "3"])
    assert args.training_seed == 3
    assert script.training_data(args).samples.seed == 3


def test_training_seed_draws_other_images_and_keeps_the_held_out_sets(script):
    args = script.parse_args(["--out", "x", "--training-seed", "7"])
    assert script.training_data(args).samples.seed == 7
    assert script.validation_data(args).seed == script.VALIDATION_OFFSET
    assert {s.seed for s in script.test_sets(args).values()} == {
        script.TEST_OFFSET + k for k in range(len(script.MODALITIES))
    }


@pytest.mark.parametrize("offset", ["VALIDATION_OFFSET", "TEST_OFFSET", "THRESHOLD_OFFSET"])
def test_training_seed_of_a_held_out_set_is_refused(script, offset, capsys):
    seed = getattr(script, offset)
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--training-seed", str(seed)])
    assert f"--training-seed {seed} is the" in capsys.readouterr().err


def test_negative_training_seed_is_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--training-seed", "-1"])
    assert "--training-seed must be >= 0, got -1" in capsys.readouterr().err


def test_every_held_out_set_draws_from_its_named_seed(script):
    args = script.parse_args(["--out", "x", "--seed", "3"])
    seeds = script.held_out_seeds(3)
    assert len(set(seeds.values())) == len(seeds) and 3 not in seeds.values()
    assert script.validation_data(args).seed == seeds["validation"]
    assert script.threshold_data(args).seed == seeds["threshold calibration"]
    assert script.calibration_data(args).samples.seed == seeds["BatchNorm recalibration"]
    tests = {m: s.seed for m, s in script.test_sets(args).items()}
    assert tests == {m: seeds[f"{m} test"] for m in script.MODALITIES}
    for m in script.MODALITIES:
        per_modality = script.threshold_data(args, m)
        assert per_modality.seed == seeds[f"{m} threshold calibration"]
        assert per_modality[0].name.startswith(f"realistic {m} (seed")


def test_diameter_bias_tilts_only_the_training_images(script):
    args = script.parse_args(["--out", "x", "--diameter-bias", "1"])
    assert script.training_data(args).samples.config.diameter_bias == 1.0
    held_out = [script.validation_data(args), script.threshold_data(args)]
    held_out += list(script.test_sets(args).values())
    assert all(s.config.diameter_bias == 0.0 for s in held_out)
    assert script.training_data(script.parse_args(["--out", "x"])).samples.config.diameter_bias == 0


def test_scale_range_reaches_the_training_augmentation_only(script):
    args = script.parse_args(["--out", "x", "--scale-range", "0.75", "1.6"])
    assert script.training_data(args).scale_range == (0.75, 1.6)
    assert script.calibration_data(args).augment is False
    assert script.training_data(script.parse_args(["--out", "x"])).scale_range == (0.9, 1.1)


def test_a_bad_scale_range_is_refused_by_name(script):
    args = script.parse_args(["--out", "x", "--scale-range", "2", "1"])
    with pytest.raises(ValueError, match="scale_range must be"):
        script.training_data(args)


def test_calibration_metric_is_one_of_calibrates_metrics(script, capsys):
    assert script.parse_args(["--out", "x"]).calibration_metric == "f1"
    args = script.parse_args(["--out", "x", "--calibration-metric", "f1_mean"])
    assert args.calibration_metric == "f1_mean"
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--calibration-metric", "ap75"])
    assert "invalid choice: 'ap75'" in capsys.readouterr().err


def test_choose_by_defaults_to_raw_and_refuses_others(script, capsys):
    assert script.parse_args(["--out", "x"]).choose_by == "raw"
    assert script.parse_args(["--out", "x", "--choose-by", "calibrated"]).choose_by == "calibrated"
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--choose-by", "best"])
    assert "invalid choice: 'best'" in capsys.readouterr().err


def _entry(weights: str, sha: str, **extra) -> dict:
    return {"preset": "lacss_small", "weights": weights, "sha256": sha, **extra}


def test_install_drops_the_entries_measured_on_the_weights_it_replaces(script):
    registry = {
        "generalist": _entry("generalist.weights.h5", "old"),
        "generalist_nuclei": _entry(
            "generalist.weights.h5",
            "old",
            profile={
                "of": "generalist",
                "command": "python examples/modality_thresholds.py measure",
            },
        ),
        "generalist_old": _entry("generalist_old.weights.h5", "kept"),
        "twin": _entry("generalist.weights.h5", "new"),
    }
    said = script.drop_entries_on_replaced_weights(
        registry, "generalist", "generalist.weights.h5", "new"
    )
    assert set(registry) == {"generalist", "generalist_old", "twin"}
    assert len(said) == 1 and "'generalist_nuclei'" in said[0]
    assert "measure it again with: python examples/modality_thresholds.py measure" in said[0]


def test_install_over_the_same_weights_keeps_every_entry(script):
    registry = {"a": _entry("a.weights.h5", "s"), "a_nuclei": _entry("a.weights.h5", "s")}
    assert script.drop_entries_on_replaced_weights(registry, "a", "a.weights.h5", "s") == []
    assert set(registry) == {"a", "a_nuclei"}


def test_an_evaluate_only_install_needs_the_recipe(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--init", "m.keras", "--evaluate-only", "--install"])
    assert "--install with --evaluate-only needs --recipe FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "said"), [(None, "cannot read it"), ("# only a comment\n\n", "holds no command")]
)
def test_an_unreadable_or_empty_recipe_is_refused_by_name(script, tmp_path, capsys, text, said):
    recipe = tmp_path / "recipe.txt"
    if text is not None:
        recipe.write_text(text)
    with pytest.raises(SystemExit):
        script.parse_args(["--out", "x", "--recipe", str(recipe)])
    err = capsys.readouterr().err
    assert f"--recipe {recipe}" in err and said in err


def test_an_evaluate_only_install_records_the_recipe_not_unused_settings(script, tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("# fine-tune\npython examples/train_generalist.py --out a --steps 800\n")
    args = script.parse_args(
        ["--out", "x", "--init", "a.keras", "--evaluate-only", "--install", "--recipe", str(recipe)]
    )
    record = script.training_record(args, steps=0)
    assert record["recipe"][:2] == [
        "# fine-tune",
        "python examples/train_generalist.py --out a --steps 800",
    ]
    assert record["recipe"][-1].startswith("python examples/train_generalist.py")
    assert "learning_rate" not in record and "steps" not in record


def test_a_training_install_records_its_own_settings(script):
    args = script.parse_args(["--out", "x", "--steps", "50", "--learning-rate", "4e-4"])
    record = script.training_record(args, steps=50)
    assert record["steps"] == 50 and record["learning_rate"] == 4e-4 and "recipe" not in record


def test_float16_weights_hold_exactly_the_rounded_model_in_half_the_file(script, tmp_path):
    import keras
    import numpy as np

    from lacss_core.models import Lacss

    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    (tmp_path / "full").mkdir(), (tmp_path / "half").mkdir()
    full = script.save_model(model, tmp_path / "full", "m")
    exact = Lacss.from_preset("lacss_tiny")
    exact.build((None, None, None, 1))
    exact.load_weights(full)  # the float32 file, copied array by array, loads as it was
    for ours, theirs in zip(exact.weights, model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), np.asarray(theirs))
    script.round_weights(model, "float16")
    half = script.save_model(model, tmp_path / "half", "m", "float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = Lacss.from_preset("lacss_tiny")
    loaded.build((None, None, None, 1))
    loaded.load_weights(half)
    for ours, theirs in zip(loaded.weights, model.weights, strict=True):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), np.asarray(theirs))


def test_rounding_to_float16_changes_float32_weights_only_below_its_precision(script):
    import numpy as np

    from lacss_core.models import Lacss

    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    before = [np.asarray(v).copy() for v in model.weights]
    script.round_weights(model, "float16")
    after = [np.asarray(v) for v in model.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    for a, b in zip(after, before, strict=True):
        np.testing.assert_allclose(a, b, rtol=2**-11, atol=2**-24)

"""Training: resumable checkpoints, reproducibility, validation with the best model kept, transfer
learning, the curve plot, and (slow) proof that the tiny preset learns on synthetic cells.

Runs on the active backend (``KERAS_BACKEND=jax`` or ``torch``); every test runs on both.
"""

import json
import os

import keras
import numpy as np
import pytest

from lacss_core._atomic import TMP_PREFIX
from lacss_core.data import LacssDataset, SyntheticCells
from lacss_core.metrics import coco_mask_ap
from lacss_core.models import Lacss
from lacss_core.predict import predict_instances
from lacss_core.train import (
    BEST_FILE,
    STATE_FILE,
    CheckpointMismatchError,
    StepBatches,
    checkpoint_name,
    evaluate_ap,
    load_state,
    plot_history,
    train,
)

# Mechanics tests: 32 x 32 images, crop 16, few cells, so a step is a few milliseconds. One model
# config (with the auxnet, so it also trains weakly supervised) keeps the number of distinct
# compiled train steps at two (full, weak).
SMALL = dict(size=(32, 32), n_cells=3, radius=(4.0, 6.0))
SMALL_MODEL = dict(crop_size=16, max_output=32, train_max_output=16, use_auxnet=True)
LEARN_STEPS = 300
WEAK_LEARN_STEPS = 400


def tiny_model(seed=0, **overrides):
    """A fresh ``lacss_tiny`` whose initial weights are fixed by ``seed``."""
    keras.utils.set_random_seed(seed)
    model = Lacss.from_preset("lacss_tiny", **{**SMALL_MODEL, **overrides})
    model.build((None, None, None, 1))
    return model


def batches(supervision="full", seed=0, n=4, batch_size=2, cells=SMALL):
    samples = SyntheticCells(n, seed=seed, **cells)
    return LacssDataset(
        samples,
        batch_size=batch_size,
        max_instances=8,
        supervision=supervision,
        size=cells["size"],
        augment=True,
        seed=seed,
    )


def assert_same_weights(a, b, atol=1e-6):
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(wa),
            keras.ops.convert_to_numpy(wb),
            atol=atol,
            err_msg=wa.path,
        )


class StopAfter(keras.callbacks.Callback):
    """Simulates a crash: raises after ``steps`` completed steps of the run."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.steps:
            raise KeyboardInterrupt(f"simulated crash after step {self.steps}")


# ------------------------------------------------------------------------------------------------
# Step-indexed data


def test_step_batches_follow_the_global_step_and_set_the_dataset_epoch():
    data = batches(n=4, batch_size=2)  # 2 batches per pass
    tail = StepBatches(data, start=3, stop=6)
    assert len(tail) == 3
    x_tail, _ = tail[0]  # step 3 = batch 1 of pass 1
    assert data.epoch == 1
    fresh = batches(n=4, batch_size=2)
    fresh.epoch = 1
    x_direct, _ = fresh[1]
    np.testing.assert_array_equal(x_tail["image"], x_direct["image"])
    np.testing.assert_array_equal(StepBatches(data, 0, 6)[3][0]["image"], x_tail["image"])
    with pytest.raises(IndexError):
        tail[3]


# ------------------------------------------------------------------------------------------------
# Checkpoints, resume, reproducibility


def test_fixed_seed_gives_the_same_loss_trajectory():
    first = train(tiny_model(), batches(), steps=4, seed=3, verbose=0)
    second = train(tiny_model(), batches(), steps=4, seed=3, verbose=0)
    assert first["step"] == [1, 2, 3, 4]
    assert set(first) >= {"loss", "lpn_loss", "seg_loss"}
    for key in ("loss", "lpn_loss", "seg_loss"):
        np.testing.assert_allclose(first[key], second[key], rtol=1e-6, err_msg=key)
    # A different data seed gives different batches, hence different losses.
    other = train(tiny_model(), batches(seed=1), steps=4, seed=3, verbose=0)
    assert not np.allclose(first["loss"], other["loss"])


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    # Crash at step 5 with checkpoints every 2 steps: resume from step 4, redo step 5.
    settings = dict(steps=6, checkpoint_every=2, seed=0, verbose=0)
    reference = tiny_model()
    history = train(reference, batches(), **settings)

    crashed_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_model(),
            batches(),
            checkpoint_dir=crashed_dir,
            callbacks=[StopAfter(5)],
            **settings,
        )
    assert load_state(crashed_dir)["step"] == 4
    resumed = tiny_model(seed=99)  # another init: the weights must all come from the checkpoint
    resumed_history = train(resumed, batches(), checkpoint_dir=crashed_dir, **settings)

    assert_same_weights(reference, resumed)
    assert resumed_history["step"] == list(range(1, 7))
    np.testing.assert_allclose(resumed_history["loss"], history["loss"], rtol=1e-5)


def test_checkpoint_folder_keeps_only_the_last_checkpoint_and_a_consistent_state(tmp_path):
    folder = tmp_path / "ckpt"
    train(
        tiny_model(), batches(), steps=5, checkpoint_dir=str(folder), checkpoint_every=2, verbose=0
    )
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["step"] == 5  # the last step is always checkpointed
    assert state["checkpoint"] == checkpoint_name(5)
    assert sorted(os.listdir(folder)) == sorted([STATE_FILE, checkpoint_name(5)])
    assert state["history"]["step"] == [1, 2, 3, 4, 5]
    restored = keras.models.load_model(folder / checkpoint_name(5))
    assert isinstance(restored, Lacss)


def test_a_finished_run_is_not_trained_again_and_a_shorter_one_is_refused(tmp_path):
    folder = str(tmp_path / "ckpt")
    model = tiny_model()
    history = train(model, batches(), steps=3, checkpoint_dir=folder, verbose=0)
    again = tiny_model(seed=5)
    assert train(again, batches(), steps=3, checkpoint_dir=folder, verbose=0) == history
    assert_same_weights(model, again, atol=0)
    with pytest.raises(ValueError, match="steps"):
        train(tiny_model(), batches(), steps=2, checkpoint_dir=folder, verbose=0)


def test_leftover_temporary_files_of_a_crash_are_removed_on_resume(tmp_path):
    folder = tmp_path / "ckpt"
    train(tiny_model(), batches(), steps=2, checkpoint_dir=str(folder), verbose=0)
    # a temporary file of a writer that died (pid 0 never names a live process)
    (folder / f"{TMP_PREFIX}0-dead-ckpt-00000004.keras").write_bytes(b"half written")
    (folder / checkpoint_name(1)).write_bytes(b"older checkpoint the state does not name")
    train(tiny_model(), batches(), steps=4, checkpoint_dir=str(folder), verbose=0)
    assert sorted(os.listdir(folder)) == sorted([STATE_FILE, checkpoint_name(4)])


def test_the_same_seed_gives_identical_weights_and_losses():
    def run():
        keras.utils.set_random_seed(7)  # before the model exists: it fixes the initial weights
        model = Lacss.from_preset("lacss_tiny", **SMALL_MODEL)
        return model, train(model, batches(), steps=3, seed=7, verbose=0)

    (first, first_history), (second, second_history) = run(), run()
    assert first_history == second_history
    assert_same_weights(first, second, atol=0)


def test_only_the_same_run_resumes(tmp_path):
    folder = str(tmp_path / "ckpt")
    train(tiny_model(), batches(), steps=2, checkpoint_dir=folder, verbose=0)
    with pytest.raises(CheckpointMismatchError, match=r"data\.samples\.seed: 0 -> 1.*'always'"):
        train(tiny_model(), batches(seed=1), steps=2, checkpoint_dir=folder, verbose=0)
    with pytest.raises(CheckpointMismatchError, match=r"model\.config\.crop_size.*different model"):
        train(tiny_model(crop_size=24), batches(), steps=2, checkpoint_dir=folder, resume="always")
    with pytest.raises(CheckpointMismatchError, match="optimizer.config.learning_rate"):
        train(tiny_model(), batches(), steps=2, checkpoint_dir=folder, learning_rate=0.1)
    with pytest.raises(CheckpointMismatchError, match="run_info.note"):
        train(tiny_model(), batches(), steps=2, checkpoint_dir=folder, run_info={"note": "x"})
    history = train(
        tiny_model(), batches(seed=1), steps=3, checkpoint_dir=folder, resume="always", verbose=0
    )
    assert history["step"] == [1, 2, 3]
    fresh = train(tiny_model(), batches(), steps=1, checkpoint_dir=folder, resume="never")
    assert fresh["step"] == [1] and load_state(folder)["step"] == 1
    with pytest.raises(ValueError, match="resume must be one of"):
        train(tiny_model(), batches(), steps=1, checkpoint_dir=folder, resume="yes")


def test_a_checkpoint_folder_in_use_is_refused_and_a_file_is_not_a_folder(tmp_path):
    from lacss_core._lock import FolderLock, FolderLockedError

    folder = tmp_path / "ckpt"
    with FolderLock(folder, purpose="lacss training"):
        with pytest.raises(FolderLockedError, match="in use by another run: lacss training"):
            train(tiny_model(), batches(), steps=1, checkpoint_dir=str(folder), verbose=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        train(tiny_model(), batches(), steps=1, checkpoint_dir=str(tmp_path / "file"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2, checkpoint_every=0), "checkpoint_every"),
        (dict(steps=2, validate_every=-1), "validate_every"),
        (dict(steps=2, learning_rate=0.0), "learning_rate"),
        (dict(steps=2.5), "steps"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(tiny_model(), batches(), verbose=0, **kwargs)


# ------------------------------------------------------------------------------------------------
# Validation, best model, transfer learning, plots


def test_validation_ap_is_logged_and_the_best_model_is_kept(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    # Deterministic fake AP50 sequence so that the best step is known: 0.2, 0.6, 0.4.
    scores = iter([0.2, 0.6, 0.4])
    saved_at_best = {}

    def fake_evaluate(model, data, **kwargs):
        ap50 = next(scores)
        if ap50 == 0.6:
            saved_at_best["weights"] = [np.array(w) for w in model.get_weights()]
        return {"ap50": ap50, "ap75": ap50 / 2, "map": ap50 / 3}

    monkeypatch.setattr("lacss_core.train.evaluate_ap", fake_evaluate)
    held_out = SyntheticCells(1, seed=7, **SMALL)
    history = train(
        tiny_model(),
        batches(),
        steps=6,
        checkpoint_dir=str(folder),
        validation_data=held_out,
        validate_every=2,
        verbose=0,
    )
    assert history["val_step"] == [2, 4, 6]
    assert history["val_ap50"] == [0.2, 0.6, 0.4]
    state = load_state(str(folder))
    assert state["best"] == {"step": 4, "ap50": 0.6}
    best = keras.models.load_model(folder / BEST_FILE)
    for saved, loaded in zip(saved_at_best["weights"], best.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, loaded)


def test_validation_during_fit_sees_the_trained_weights(monkeypatch):
    from lacss_core import train as train_module

    seen = []

    def recording_evaluate(model, data, **kwargs):
        seen.append([np.array(w) for w in model.get_weights()])
        return evaluate_ap(model, data, **kwargs)  # the real one, inside fit

    monkeypatch.setattr(train_module, "evaluate_ap", recording_evaluate)
    held_out = SyntheticCells(1, seed=7, **SMALL)
    model = tiny_model()
    history = train(
        model, batches(), steps=2, validation_data=held_out, validate_every=2, verbose=0
    )
    assert history["val_step"] == [2]
    assert 0.0 <= history["val_ap50"][0] <= 1.0
    # Step 2 is the last step, so the weights validated then must be the final ones (on JAX
    # the trained state lives outside the model during fit until it is synced).
    for validated, final in zip(seen[0], model.get_weights(), strict=True):
        np.testing.assert_array_equal(validated, final)


def test_evaluate_ap_matches_metrics_on_predictions():
    model = tiny_model()
    held_out = SyntheticCells(2, seed=11, **SMALL)
    result = evaluate_ap(model, held_out)
    labels, details = predict_instances(model, [s.image for s in held_out])
    expected = coco_mask_ap(labels, [s.label for s in held_out], [d["scores"] for d in details])
    assert result == {"ap50": expected.ap50, "ap75": expected.ap75, "map": expected.map}
    pairs = [(s.image, s.label) for s in held_out]
    assert evaluate_ap(model, pairs) == result


def test_transfer_learning_pretrain_full_then_finetune_weak(tmp_path):
    pretrained = tiny_model()
    train(pretrained, batches("full"), steps=3, seed=0, verbose=0)
    path = tmp_path / "pretrained.keras"
    pretrained.save(path)

    finetuned = keras.models.load_model(path)
    assert_same_weights(pretrained, finetuned, atol=0)
    new_data = batches("weak", seed=5)  # different images, points + masks only
    history = train(finetuned, new_data, steps=3, seed=0, verbose=0)
    assert np.all(np.isfinite(history["loss"]))
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(pretrained.get_weights(), finetuned.get_weights(), strict=True)
    ]
    assert any(changed)


def test_plot_history_writes_a_png(tmp_path):
    history = {
        "step": [1, 2, 3, 4],
        "loss": [2.0, 1.5, 1.2, 1.0],
        "lpn_loss": [1.0, 0.8, 0.7, 0.6],
        "seg_loss": [1.0, 0.7, 0.5, 0.4],
        "val_step": [2, 4],
        "val_ap50": [0.3, 0.5],
        "val_ap75": [0.1, 0.2],
        "val_map": [0.1, 0.2],
    }
    loss_only = {k: v for k, v in history.items() if not k.startswith("val")}
    for name, data in (("with_val.png", history), ("loss_only.png", loss_only)):
        path = tmp_path / name
        plot_history(data, str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="history"):
        plot_history({}, str(tmp_path / "empty.png"))


# ------------------------------------------------------------------------------------------------
# Proof that it learns


def located_fraction(pred_locations, gt_locations, radius):
    """Fraction of GT locations with a predicted location within ``radius`` pixels."""
    if len(gt_locations) == 0:
        return 1.0
    if len(pred_locations) == 0:
        return 0.0
    d2 = ((gt_locations[:, None, :] - pred_locations[None, :, :]) ** 2).sum(-1)
    return float((d2.min(axis=1) <= radius**2).mean())


def assert_finds_held_out_cells(model, cells, *, min_ap50):
    """On 4 held-out images most cells are located (a prediction within 4 px of the GT centroid;
    the LPN stride is 8 px) and segmented (COCO AP50 at least ``min_ap50``)."""
    held_out = SyntheticCells(4, seed=1000, **cells)
    labels, details = predict_instances(model, [s.image for s in held_out])
    found = np.mean(
        [
            located_fraction(d["locations"], s.locations, radius=4.0)
            for d, s in zip(details, held_out, strict=True)
        ]
    )
    assert found >= 0.6, f"found {found:.2f} of the held-out cells"
    ap = coco_mask_ap(labels, [s.label for s in held_out], [d["scores"] for d in details])
    assert ap.ap50 >= min_ap50, f"held-out AP50 {ap.ap50:.3f}"


@pytest.mark.slow
def test_tiny_preset_learns_synthetic_cells():
    """Fully supervised training on synthetic cells: the loss falls and most cells are found."""
    cells = dict(size=(64, 64), n_cells=6, radius=(5.0, 8.0))
    model = tiny_model(crop_size=24, max_output=64, train_max_output=32, use_auxnet=False)
    data = LacssDataset(
        SyntheticCells(16, seed=0, **cells),
        batch_size=4,
        max_instances=12,
        size=cells["size"],
        augment=True,
        seed=0,
    )
    history = train(model, data, steps=LEARN_STEPS, learning_rate=2e-3, seed=0, verbose=0)

    losses = np.asarray(history["loss"])
    assert np.all(np.isfinite(losses))
    start, end = losses[:5].mean(), losses[-20:].mean()  # this run: about 1.0 -> 0.12
    assert end < 0.35 * start, f"loss fell only from {start:.3f} to {end:.3f}"

    # This run reaches about 0.8 AP50 on both backends.
    assert_finds_held_out_cells(model, cells, min_ap50=0.5)


@pytest.mark.slow
def test_tiny_preset_learns_from_points_and_masks():
    """Weakly supervised training from scratch (points + foreground mask, auxnet on) with the
    opt-in head bias and centre prior (docs/results.md): the LPN loss falls, most cells are found
    and segmented."""
    cells = dict(size=(64, 64), n_cells=6, radius=(5.0, 8.0))
    # Not every start learns: with the host initializers, seeds 1-3 reached AP50 0.77-0.83 on
    # JAX and seed 0 collapsed (no proposal above min_score); see docs/results.md.
    model = tiny_model(
        seed=1,
        crop_size=24,
        max_output=64,
        train_max_output=32,
        use_auxnet=True,
        segmentor_head_bias_init=-4.0,
        centre_prior_sigma=3.0,
    )
    data = LacssDataset(
        SyntheticCells(16, seed=0, **cells),
        batch_size=4,
        max_instances=12,
        supervision="weak",
        size=cells["size"],
        augment=True,
        seed=0,
    )
    history = train(model, data, steps=WEAK_LEARN_STEPS, learning_rate=2e-3, seed=0, verbose=0)

    lpn = np.asarray(history["lpn_loss"])
    assert np.all(np.isfinite(history["loss"]))
    assert lpn[-20:].mean() < 0.35 * lpn[:5].mean(), "the LPN did not learn"
    assert_finds_held_out_cells(model, cells, min_ap50=0.4)  # 0 if the patches collapse


def test_warmup_cosine_rises_then_decays_to_zero_and_weak_default_is_constant():
    from lacss_core.train import WEAK_SCHEDULE, warmup_cosine, weak_learning_rate

    rate = warmup_cosine(2e-3, 100)  # 5 warm-up steps
    values = [float(rate(step)) for step in (0, 5, 52, 100)]
    assert values[0] == 0.0 and values[1] == pytest.approx(2e-3)
    assert values[2] == pytest.approx(1e-3, rel=0.02) and values[3] == pytest.approx(0.0)
    assert weak_learning_rate(1e-3, 100) == 1e-3 and WEAK_SCHEDULE is False  # docs/results.md
    assert float(weak_learning_rate(1e-3, 100, schedule=True)(5)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="learning_rate: must be > 0"):
        warmup_cosine(0.0, 10)

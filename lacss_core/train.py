"""Training on top of ``model.compile`` + ``model.fit``: step-indexed data, atomic checkpoints with
resume, validation AP with the best model kept, and a training-curve plot.

The loop is Keras's own ``fit``, so it runs unchanged on JAX and PyTorch. Each fit "epoch" is one
optimizer step: Keras resets the loss trackers every epoch, so the logged values are that step's
losses (not running means), and the epoch number is the global step index, which is what makes the
schedule resumable: the batch for step ``t`` is a pure function of ``t`` and the dataset's seed, so
a run resumed from the checkpoint at step ``t0`` sees exactly the batches an uninterrupted run sees.

Checkpoint folder layout (``checkpoint_dir``)::

    state.json           {"step", "checkpoint" (file name), "best", "history", "run"}
    ckpt-00000100.keras  the model (weights + optimizer state) after step 100 (the last one only)
    best.keras           the model with the highest validation AP50 so far
    .lacss.lock          while a run trains here: who (pid, host, start time)

``run`` records what the run is (model config, optimizer, seed, data; ``lacss_core._run_record``);
only a call with the same record resumes (``train(resume=...)``).

Every file is written to a temporary name in the same folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), and ``state.json`` is replaced only after the
checkpoint it names is complete, so a crash at any moment leaves a consistent, resumable folder.
Old checkpoints are deleted only after ``state.json`` points at the new one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence

import keras
import numpy as np

from lacss_core import _validation
from lacss_core._atomic import atomic_open, atomic_path, remove_stale_temporaries
from lacss_core._lock import FolderLock
from lacss_core._progress import Progress, parse_log_every
from lacss_core._run_record import differences, run_record

#: Default Adam learning rate. The paper does not state one; 1e-3 (Adam's usual default) trains
#: the tiny preset on synthetic cells in a few hundred steps, see docs/results.md.
DEFAULT_LEARNING_RATE = 1e-3

#: ``warmup_cosine``: the fraction of the steps the learning rate rises over, from 0.
WARMUP_FRACTION = 0.05


def warmup_cosine(learning_rate: float, steps: int, warmup_fraction: float = WARMUP_FRACTION):
    """Adam's learning rate for ``steps`` steps: linear from 0 to ``learning_rate`` over
    ``warmup_fraction`` of them (at least one step), then cosine decay to 0 at ``steps``.

    A Keras ``LearningRateSchedule`` indexed by the optimizer's step count, which checkpoints
    keep, so a resumed run continues on the same curve. Its config holds ``steps``: a run
    with another ``steps`` is another run (``train``'s ``resume``).
    """
    _check_positive(steps=steps)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: must be > 0, got {learning_rate}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction: must be in [0, 1), got {warmup_fraction}")
    warmup = min(max(1, round(steps * warmup_fraction)), steps - 1) if steps > 1 else 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=steps - warmup,
        alpha=0.0,
        warmup_target=float(learning_rate),
        warmup_steps=warmup,
    )


#: Whether weakly supervised training from scratch uses ``warmup_cosine`` by default.
WEAK_SCHEDULE = False


def weak_learning_rate(learning_rate: float, steps: int, *, schedule: bool | None = None):
    """The learning rate (a float or a schedule) of weakly supervised training from scratch.

    ``schedule``: True for ``warmup_cosine``, False for the constant ``learning_rate``, None
    for ``WEAK_SCHEDULE``.
    """
    if schedule is None:
        schedule = WEAK_SCHEDULE
    return warmup_cosine(learning_rate, steps) if schedule else float(learning_rate)


STATE_FILE = "state.json"
BEST_FILE = "best.keras"
_CHECKPOINT_PREFIX = "ckpt-"
RESUME_MODES = ("auto", "always", "never")


class CheckpointMismatchError(ValueError):
    """The checkpoint folder holds a different run than the one asked for."""


# ----------------------------------------------------------------------------------------------
# Step-indexed data


class StepBatches(keras.utils.PyDataset):
    """The batches for global steps ``start, start + 1, ..., stop - 1``, in that order.

    Step ``t`` reads batch ``t % len(data)`` of pass ``t // len(data)`` over ``data``. If ``data``
    has an ``epoch`` attribute (as ``lacss_core.data.LacssDataset``, whose order and augmentation
    are seeded by ``(seed, epoch, index)``), it is set to the pass number before each read, so the
    batch is a pure function of the step. Reads happen one at a time in the training thread
    (``workers=1``; the wrapped dataset's own workers are not used), so setting ``epoch`` and
    reading cannot interleave with another read.

    Args:
        data: a sequence of ``(x, y)`` batches (``__len__`` and ``__getitem__``), typically a
            ``keras.utils.PyDataset`` in the training batch format.
        start: first global step (0-based), ``0 <= start <= stop``.
        stop: one past the last global step.
    """

    def __init__(self, data, start: int, stop: int):
        super().__init__(workers=1, use_multiprocessing=False)
        if len(data) < 1:
            raise ValueError(f"train_data: need at least one batch, got length {len(data)}")
        if not 0 <= start <= stop:
            raise ValueError(f"start, stop: need 0 <= start <= stop, got start={start} stop={stop}")
        self.data, self.start, self.stop = data, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def batch_for_step(self, step: int):
        """The ``(x, y)`` batch of global step ``step``."""
        epoch, index = divmod(step, len(self.data))
        if hasattr(self.data, "epoch"):
            self.data.epoch = epoch
        return self.data[index]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} steps")
        return self.batch_for_step(self.start + index)


# ----------------------------------------------------------------------------------------------
# Atomic files and checkpoint state


def _write_json_atomic(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file in the same folder + os.replace."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f)


def save_model(model: keras.Model, path) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file in the same folder (atomic)."""
    with atomic_path(path) as tmp:  # the name still ends in .keras, as model.save requires
        model.save(tmp)


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` completed steps."""
    return f"{_CHECKPOINT_PREFIX}{step:08d}.keras"


def load_state(checkpoint_dir: str) -> dict | None:
    """The resume state of ``checkpoint_dir`` (see the module docstring), or None if it has none.

    Raises:
        ValueError: ``state.json`` is unreadable, not valid JSON or lacks its keys, naming it.
    """
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(
            f"checkpoint state {path} is corrupt or truncated ({e}); delete {checkpoint_dir} or "
            "start afresh with resume='never' (lacss train --overwrite)"
        ) from e
    missing = [k for k in ("step", "checkpoint", "best", "history") if k not in state]
    if not isinstance(state, dict) or missing:
        raise ValueError(f"checkpoint state {path} is not a lacss state file (lacks {missing})")
    return state


def _remove_stale_files(checkpoint_dir: str, keep: str | None) -> None:
    """Delete every checkpoint except ``keep`` (the one the state names) and the temporary files
    of dead processes (the folder is locked, so no other live run writes here)."""
    for name in os.listdir(checkpoint_dir):
        if name.startswith(_CHECKPOINT_PREFIX) and name != keep:
            os.remove(os.path.join(checkpoint_dir, name))
    remove_stale_temporaries(checkpoint_dir)


def _clear_checkpoints(checkpoint_dir: str) -> None:
    """Delete what an earlier run left in ``checkpoint_dir`` (resume="never")."""
    for name in os.listdir(checkpoint_dir):
        if name.startswith(_CHECKPOINT_PREFIX) or name in (STATE_FILE, BEST_FILE):
            os.remove(os.path.join(checkpoint_dir, name))
    remove_stale_temporaries(checkpoint_dir)


# ----------------------------------------------------------------------------------------------
# Validation


def evaluate_ap(model: keras.Model, validation_data, **predict_kwargs) -> dict[str, float]:
    """COCO mask AP (SPEC 10) of ``model`` on held-out images, all images pooled.

    Args:
        model: a ``lacss_core.models.Lacss``.
        validation_data: a sequence of ``lacss_core.data.Sample`` with a label (e.g.
            ``SyntheticCells``), or of ``(image, label)`` pairs: image ``(H, W, C)`` or ``(H, W)``
            (raw; ``predict_instances`` normalises it as in training, to [0, 1] by default),
            label int ``(H, W)`` with 0 = background.
        **predict_kwargs: passed to ``lacss_core.predict.predict_instances``.

    Returns:
        ``{"ap50": ..., "ap75": ..., "map": ...}``, floats in [0, 1] (NaN if no image holds a cell).
    """
    from lacss_core.metrics import coco_mask_ap
    from lacss_core.predict import predict_instances

    gt_labels, pred_labels, pred_scores = [], [], []
    for image, label in _image_label_pairs(validation_data):
        pred, details = predict_instances(model, image, **predict_kwargs)
        gt_labels.append(label)
        pred_labels.append(pred)
        pred_scores.append(details["scores"])
    result = coco_mask_ap(pred_labels, gt_labels, pred_scores)
    return {"ap50": result.ap50, "ap75": result.ap75, "map": result.map}


def _image_label_pairs(validation_data):
    for i, item in enumerate(validation_data):
        if hasattr(item, "image"):
            if item.label is None:
                raise ValueError(f"validation_data[{i}]: a Sample without a label (AP needs one)")
            yield item.image, np.asarray(item.label)
        else:
            image, label = item
            yield image, np.asarray(label)


# ----------------------------------------------------------------------------------------------
# The monitor callback: history, validation, best model, checkpoints, progress lines


class _TrainingMonitor(keras.callbacks.Callback):
    """Records per-step logs and runs validation and checkpointing at their step counts.

    Fit epochs are steps (see the module docstring): ``on_epoch_end(t)`` runs after global step
    ``t`` (0-based), i.e. after ``t + 1`` completed steps; on JAX the model variables are synced
    to the trained state before ``on_epoch_end``, so saving and predicting here see it.
    """

    def __init__(
        self,
        *,
        total_steps,
        state,
        checkpoint_dir,
        checkpoint_every,
        validate,
        validate_every,
        progress,
    ):
        super().__init__()
        self.total_steps = total_steps
        self.history = state["history"]
        self.best = state["best"]
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.validate = validate
        self.validate_every = validate_every
        self.progress = progress
        self.run = state["run"]

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self._record(done, logs or {})
        if self.validate is not None and self._due(done, self.validate_every):
            self._validate(done)
        if self.checkpoint_dir and self._due(done, self.checkpoint_every):
            self._checkpoint(done)
        self.progress.update(done, **self._latest_losses())

    def _latest_losses(self):
        keys = [k for k in self.history if k != "step" and not k.startswith("val_")]
        return {k: self.history[k][-1] for k in keys}

    def _due(self, done, every):
        """Every ``every`` steps, and always after the last step of the run."""
        return done % every == 0 or done == self.total_steps

    def _record(self, done, logs):
        self.history.setdefault("step", []).append(done)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def _validate(self, done):
        scores = self.validate(self.model)
        self.history.setdefault("val_step", []).append(done)
        for key, value in scores.items():
            self.history.setdefault(f"val_{key}", []).append(float(value))
        self.progress.write(
            f"step {done}: validation AP50 {scores['ap50']:.3f}  AP75 {scores['ap75']:.3f}  "
            f"mAP {scores['map']:.3f}"
        )
        # NaN (no ground truth) never counts as an improvement.
        if scores["ap50"] > self.best.get("ap50", -math.inf):
            self.best.update(step=done, ap50=float(scores["ap50"]))
            if self.checkpoint_dir:
                save_model(self.model, os.path.join(self.checkpoint_dir, BEST_FILE))

    def _checkpoint(self, done):
        name = checkpoint_name(done)
        save_model(self.model, os.path.join(self.checkpoint_dir, name))
        state = {"step": done, "checkpoint": name, "best": self.best, "history": self.history}
        state["run"] = self.run
        _write_json_atomic(os.path.join(self.checkpoint_dir, STATE_FILE), state)
        _remove_stale_files(self.checkpoint_dir, keep=name)


# ----------------------------------------------------------------------------------------------
# train()


def train(
    model: keras.Model,
    train_data: Sequence,
    *,
    steps: int,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    optimizer: keras.optimizers.Optimizer | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 500,
    validation_data: Sequence | None = None,
    validate_every: int = 500,
    seed: int | None = None,
    resume: str = "auto",
    run_info: dict | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    log_every: int | str | None = None,
    calibrate: bool = True,
) -> dict[str, list]:
    """Train ``model`` for ``steps`` optimizer steps with ``model.fit``; resume if checkpointed.

    The regime follows the batches: ``y = {"label": ...}`` trains fully supervised,
    ``y = {"mask": ...}`` weakly supervised (the model's ``compute_loss`` decides; all loss weights
    are the model's, 1 by default as in the paper). To fine-tune from a saved model (transfer
    learning), load it first (``keras.models.load_model`` or ``model.load_weights``) and pass it in.

    Args:
        model: a ``lacss_core.models.Lacss`` (any Keras model with ``compute_loss`` works). It is
            compiled here (a fresh optimizer) and trained in place.
        train_data: a sequence of ``(x, y)`` batches in the training batch format (see
            ``lacss_core.data``); step ``t`` uses batch ``t % len(train_data)``, with
            ``train_data.epoch = t // len(train_data)`` set first if it has that attribute
            (see ``StepBatches``). For resuming to
            repeat an uninterrupted run exactly, batch ``i`` of pass ``e`` must depend only on
            ``(seed, e, i)``.
        steps: total number of optimizer steps of the run (not the steps still to do).
        learning_rate: Adam learning rate, used when ``optimizer`` is None.
        optimizer: a Keras optimizer to use instead of ``Adam(learning_rate)``.
        checkpoint_dir: folder for checkpoints, ``state.json`` and ``best.keras`` (created if
            missing; removed again if the run fails before its first checkpoint). It is locked
            for the run (``.lacss.lock`` names the holder), so two runs cannot share it. If it
            holds a state from the same run (see ``resume``), training resumes from its last
            checkpoint (weights and optimizer state) with the same schedule.
        checkpoint_every: steps between checkpoints; the last step is always checkpointed.
        validation_data: held-out ``(image, label)`` pairs (see ``evaluate_ap``), or None.
        validate_every: steps between validations; the last step is always validated.
        seed: if given, ``keras.utils.set_random_seed(seed)`` is called first (Python, NumPy and
            backend RNGs); the data's own seed fixes the batches. This fixes the initial weights
            only of a model whose variables do not exist yet: for the same model bit for bit,
            call ``keras.utils.set_random_seed(seed)`` before constructing it (as ``lacss train``
            does). Random state kept in the model (Keras ``SeedGenerator`` variables) is
            checkpointed; the global RNGs are not.
        resume: what to do with a checkpoint folder that holds a state. Each checkpoint records
            the run (the model's config, the optimizer, ``seed``, the data's settings and a hash
            of its samples, ``run_info``; not ``steps`` or the intervals, so raising ``steps``
            continues a run). ``"auto"``: resume when the record matches, else raise
            ``CheckpointMismatchError`` listing what differs. ``"always"``: resume even if the
            data, seed, optimizer or ``run_info`` changed (with a warning); never a different
            model. ``"never"``: delete the folder's checkpoints and start afresh.
        run_info: extra JSON-able facts that must match for a resume (e.g. command-line
            options).
        callbacks: extra Keras callbacks; their "epochs" are steps.
        verbose: 0: no progress report (warnings still go to stderr); 1: progress on stdout, a
            bar on a terminal, else plain lines (``lacss_core._progress``), with validation
            results.
        log_every: off a terminal, a line every N steps (an int, or ``"N"``) or every N seconds
            (``"Ns"``); default (None) about 20 lines per run.
        calibrate: with ``validation_data``, choose the prediction thresholds after training
            (``lacss_core.calibrate.calibrate`` on ``validation_data``, F1 at IoU 0.5) and
            store them in the model (``min_score``, ``segmentation_threshold``,
            ``predict_nms_distance``, ``calibration``; printed with ``verbose``), so the trained
            model predicts with them by default. Checkpoints (``best.keras`` included) are
            saved during training and keep the previous values. Validation data that cannot be
            calibrated on (no cell) leaves them as they were, with a warning.

    Before training, :func:`record_training_data` stores the data's normalisation and median cell
    diameter in the model's config, for prediction.

    Returns:
        The history of the whole run (including steps before a resume): ``"step"`` (completed
        steps, 1-based) and one list per logged metric (``"loss"``, ``"lpn_loss"``, ...), each
        value that step's own loss; if validated, ``"val_step"``, ``"val_ap50"``, ``"val_ap75"``,
        ``"val_map"``.

    Raises:
        ValueError: a non-positive ``steps``, ``checkpoint_every``, ``validate_every`` or
            ``learning_rate``, a ``checkpoint_dir`` that is a file, a corrupt ``state.json`` or
            checkpoint (naming it), or a checkpoint state past ``steps``.
        CheckpointMismatchError: (a ``ValueError``) the folder holds a different run.
        lacss_core._lock.FolderLockedError: another live run uses ``checkpoint_dir``.
    """
    _check_positive(steps=steps, checkpoint_every=checkpoint_every, validate_every=validate_every)
    log_every = parse_log_every(log_every, "log_every")
    if optimizer is None and not learning_rate > 0:
        raise ValueError(f"learning_rate: must be > 0, got {learning_rate}")
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    if checkpoint_dir is not None and os.path.exists(checkpoint_dir):
        if not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir {checkpoint_dir} exists and is not a folder")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate))
    record_training_data(model, train_data)  # before the run record, which holds the config
    record = run_record(model, model.optimizer, train_data, seed, run_info)
    run = dict(
        model=model,
        train_data=train_data,
        steps=steps,
        checkpoint_every=checkpoint_every,
        validation_data=validation_data,
        validate_every=validate_every,
        callbacks=callbacks,
        progress=dict(show="auto" if verbose else "none", every=log_every[0], seconds=log_every[1]),
    )
    if checkpoint_dir is None:
        history = _fit(state=_fresh_state(record), checkpoint_dir=None, **run)
    else:
        created = not os.path.isdir(checkpoint_dir)
        try:
            with FolderLock(checkpoint_dir, purpose="lacss training"):
                state = _resume(model, train_data, checkpoint_dir, steps, record, resume)
                history = _fit(state=state, checkpoint_dir=checkpoint_dir, **run)
        finally:
            if created and os.path.isdir(checkpoint_dir) and not os.listdir(checkpoint_dir):
                os.rmdir(checkpoint_dir)  # a run that failed before its first checkpoint
    if calibrate and validation_data is not None:
        calibrate_after_training(model, validation_data, verbose)
    return history


def calibrate_after_training(model: keras.Model, validation_data, verbose: int = 1) -> dict | None:
    """``train``'s last step: calibrate the thresholds on ``validation_data`` and store them
    (``lacss_core.calibrate``); returns the calibration, or None (with a warning on stderr)
    when the data cannot be calibrated on, so a finished training run is never lost to it."""
    from lacss_core.calibrate import calibrate, describe

    try:
        result = calibrate(model, validation_data, store=True)
    except ValueError as e:
        print(f"warning: thresholds not calibrated: {e}", file=sys.stderr)
        return None
    if verbose:
        print(describe(result), file=sys.stdout, flush=True)
    return result


def _fit(
    *,
    model,
    train_data,
    steps,
    state,
    checkpoint_dir,
    checkpoint_every,
    validation_data,
    validate_every,
    callbacks,
    progress,
):
    """Run ``model.fit`` from ``state["step"]`` to ``steps``; returns the whole history.

    ``progress``: the keyword arguments of the ``Progress`` that reports the steps on stdout.
    """
    validate = None
    if validation_data is not None:
        validate = lambda m: evaluate_ap(m, validation_data)  # noqa: E731
    reporter = Progress(steps, "training", initial=state["step"], stream=sys.stdout, **progress)
    monitor = _TrainingMonitor(
        total_steps=steps,
        state=state,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        validate=validate,
        validate_every=validate_every,
        progress=reporter,
    )
    with reporter:
        if state["step"] < steps:
            model.fit(
                StepBatches(train_data, state["step"], steps),
                epochs=steps,
                initial_epoch=state["step"],
                steps_per_epoch=1,
                shuffle=False,  # the step order is the schedule; Keras would shuffle a PyDataset
                callbacks=[monitor, *callbacks],
                verbose=0,
            )
    return monitor.history


#: Samples whose labels ``record_training_data`` measures (the first ones; enough for a median).
DIAMETER_SAMPLES = 64


def record_training_data(model: keras.Model, train_data) -> None:
    """Record in ``model``'s config what prediction must repeat about the training images.

    ``image_normalization`` becomes ``train_data.normalize`` (``LacssDataset``'s method), so
    ``predict_instances`` normalises as in training. ``train_diameter`` becomes the
    ``train_diameter`` of ``train_data.samples`` if they have one (rescaled samples,
    ``lacss_core.data.sizes.RescaledSamples``: the cells are that size, whatever the model
    recorded before); else, if the model has none yet, the median equivalent cell diameter
    (pixels) of the labels of the first ``DIAMETER_SAMPLES`` samples (fully labelled samples
    only), so ``predict_instances(diameter=...)`` can rescale images to it. Data without those
    attributes (any other sequence of batches) leaves the model as it is.
    """
    from lacss_core.postprocess import median_diameter

    if hasattr(train_data, "normalize") and hasattr(model, "image_normalization"):
        model.image_normalization = train_data.normalize
    samples = getattr(train_data, "samples", None)
    if samples is None or not hasattr(model, "train_diameter"):
        return
    if getattr(samples, "train_diameter", None) is not None:
        model.train_diameter = samples.train_diameter
        return
    if model.train_diameter is not None:
        return
    labels = []
    for i in range(min(len(samples), DIAMETER_SAMPLES)):
        label = getattr(samples[i], "label", None)
        if label is None:
            return  # points + masks: no cell sizes to measure
        labels.append(label)
    model.train_diameter = median_diameter(labels)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        _validation.positive_int(value, name)


def _fresh_state(record: dict) -> dict:
    return {"step": 0, "best": {}, "history": {}, "run": record}


def _resume(model, train_data, checkpoint_dir, steps, record, resume) -> dict:
    """Load the last checkpoint of ``checkpoint_dir`` into ``model`` if it belongs to this run
    (see ``train``'s ``resume``); return the run state (step 0 and empty history when fresh)."""
    state = load_state(checkpoint_dir)
    if state is not None and resume == "never":
        _clear_checkpoints(checkpoint_dir)
        state = None
    _remove_stale_files(checkpoint_dir, keep=state and state["checkpoint"])
    if state is None:
        return _fresh_state(record)
    _check_same_run(state, record, checkpoint_dir, resume)
    if state["step"] > steps:
        raise ValueError(
            f"steps: the checkpoint in {checkpoint_dir!r} is at step {state['step']}, past "
            f"steps={steps}; raise steps, or start afresh with resume='never' "
            "(lacss train --overwrite)"
        )
    _build_for_loading(model, train_data)
    path = os.path.join(checkpoint_dir, state["checkpoint"])
    try:
        model.load_weights(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        from lacss_core._model_file import keras_file_problem

        problem = keras_file_problem(path) or f"its weights do not fit this model ({e})"
        raise ValueError(
            f"checkpoint {path} cannot be loaded: {problem}. Start afresh with resume='never' "
            "(lacss train --overwrite)"
        ) from e
    state["run"] = record  # the checkpoints this run writes describe it
    return state


def _check_same_run(state, record, checkpoint_dir, resume) -> None:
    """Refuse to resume a different run unless ``resume="always"`` (never a different model)."""
    stored = state.get("run")
    if stored is None:
        changes = ["it records no run settings (written by an older lacss-core)"]
    else:
        changes = differences(stored, record)
    if not changes:
        return
    other_model = any(c.startswith("model.") for c in changes)
    if resume == "always" and not other_model:
        print(
            f"warning: resuming {checkpoint_dir} at step {state['step']} although the run "
            f"changed: {'; '.join(changes[:6])}",
            file=sys.stderr,
        )
        return
    listed = "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")
    how = (
        "A checkpoint of a different model cannot be resumed: start afresh"
        if other_model
        else "Resume it anyway with resume='always' (lacss train --resume), or start afresh"
    )
    raise CheckpointMismatchError(
        f"{checkpoint_dir} holds checkpoints of a different run (at step {state['step']}): "
        f"{listed}. {how} with resume='never' (lacss train --overwrite, which deletes those "
        "checkpoints), or use another checkpoint folder"
    )


def _build_for_loading(model: keras.Model, train_data) -> None:
    """Create the model's and the optimizer's variables so a checkpoint can be loaded into them."""
    if not model.built:
        x, _ = StepBatches(train_data, 0, 1)[0]
        model(x)
    model.optimizer.build(model.trainable_variables)


# ----------------------------------------------------------------------------------------------
# Training curve


def plot_history(history: dict[str, list], path: str, *, smooth: int | None = None) -> None:
    """Write a training-curve PNG: the loss terms per step and, if present, validation AP.

    Args:
        history: as returned by ``train``.
        path: output ``.png`` file.
        smooth: moving-average window in steps for the loss curves (default: about 1/50 of the
            run); the raw per-step losses of a small batch are noisy.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    steps = np.asarray(history.get("step", []))
    if steps.size == 0:
        raise ValueError("history: no recorded steps to plot")
    window = smooth or max(1, steps.size // 50)
    has_val = bool(history.get("val_step"))
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(8 if has_val else 4.5, 3), dpi=80)
    loss_ax = axes[0] if has_val else axes
    for key in _loss_keys(history):
        loss_ax.plot(steps, _moving_average(history[key], window), label=key, linewidth=1)
    loss_ax.set(xlabel="step", ylabel="loss", title=f"training loss ({window}-step mean)")
    loss_ax.legend(fontsize=7)
    if has_val:
        for key in ("val_ap50", "val_ap75", "val_map"):
            if key in history:
                axes[1].plot(history["val_step"], history[key], marker=".", label=key[4:])
        axes[1].set(xlabel="step", ylabel="AP", ylim=(0, 1), title="validation")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(fig)


def _loss_keys(history: dict[str, list]) -> list[str]:
    return [k for k in history if k.endswith("loss") and not k.startswith("val_")]


def _moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start), same length as input."""
    values = np.asarray(values, dtype=np.float64)
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(0, ends - window)
    return (cumsum[ends] - cumsum[starts]) / (ends - starts)


__all__ = [
    "DEFAULT_LEARNING_RATE",
    "RESUME_MODES",
    "CheckpointMismatchError",
    "StepBatches",
    "calibrate_after_training",
    "checkpoint_name",
    "evaluate_ap",
    "load_state",
    "plot_history",
    "record_training_data",
    "save_model",
    "train",
    "warmup_cosine",
    "weak_learning_rate",
]

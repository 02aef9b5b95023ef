"""``max_overlap`` on the shipped generalist (``docs/results.md``, "Large cells found twice").

Usage::

    KERAS_BACKEND=jax python benchmarks/max_overlap.py [--images 8]

The first ``--images`` held-out images per modality (the sets of
``examples/train_generalist.py``), each predicted once at ``min_score`` 0.2 with ``max_overlap``
1 (off) and 0.5, then cut at higher scores (the occlusion rule and ``clean_masks`` both commute
with the cut). Prints a markdown table: AP50 / AP75, F1 at IoU 0.5 per score cut, cells found at
``min_score`` 0.5.
"""

from __future__ import annotations

import argparse

import numpy as np

CUTS = (0.3, 0.4, 0.5, 0.65)


def scores_at_cuts(preds, truths):
    """F1 at IoU 0.5 for each score cut, and the cells kept at 0.5."""
    from lacss_core.metrics import object_accuracy

    f1s, found = [], 0
    for cut in CUTS:
        labels = []
        for label, details in preds:
            n = int((details["scores"] >= cut).sum())
            labels.append(np.where(label > n, 0, label))
            found += n if cut == 0.5 else 0
        f1s.append(object_accuracy(labels, truths, 0.5).f1)
    return f1s, found


def main(argv=None) -> None:
    from lacss_core.data import RealisticCells
    from lacss_core.data.realistic import MODALITIES
    from lacss_core.metrics import coco_mask_ap
    from lacss_core.models import Lacss
    from lacss_core.predict import predict_instances

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args(argv)
    model = Lacss.from_preset("lacss_small", weights="generalist")
    cuts = " | ".join(f"F1 @ {c}" for c in CUTS)
    print(f"| modality | max_overlap | AP50 | AP75 | {cuts} | found / true @ 0.5 |")
    print("|---|---|---|---|" + "---|" * len(CUTS) + "---|")
    for k, modality in enumerate(MODALITIES):
        held_out = RealisticCells(
            args.images, seed=2000 + k, modality=modality, size=256, diameter=(8.0, 64.0),
            max_cells=None,
        )  # fmt: skip
        samples = list(held_out)
        truths = [s.label for s in samples]
        cells = sum(int(t.max()) for t in truths)
        for max_overlap in (1.0, 0.5):
            preds = [
                predict_instances(model, s.image, min_score=0.2, max_overlap=max_overlap)
                for s in samples
            ]
            ap = coco_mask_ap([p[0] for p in preds], truths, [p[1]["scores"] for p in preds])
            f1s, found = scores_at_cuts(preds, truths)
            f1 = " | ".join(f"{f:.3f}" for f in f1s)
            print(f"| {modality} | {max_overlap:g} | {ap.ap50:.3f} | {ap.ap75:.3f} | {f1} | "
                  f"{found} / {cells} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

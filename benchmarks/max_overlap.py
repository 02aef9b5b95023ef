"""``max_overlap`` on the shipped generalist (``docs/results.md``, "Large cells found twice").

Usage::

    KERAS_BACKEND=jax python benchmarks/max_overlap.py

The first 8 held-out images per modality (the sets of ``examples/train_generalist.py``), each
predicted once at ``min_score`` 0.2 with ``max_overlap`` 1 (off) and 0.5, then cut at higher
scores (the occlusion rule and ``clean_masks`` both commute with the cut). Prints a markdown
table: AP50 / AP75, F1 at IoU 0.5 per score cut, cells found at 0.5.
"""

import numpy as np
from lacss_core.data import RealisticCells
from lacss_core.data.realistic import MODALITIES
from lacss_core.models import Lacss
from lacss_core.metrics import coco_mask_ap, object_accuracy
from lacss_core.postprocess import count_defects
from lacss_core.predict import predict_instances

model = Lacss.from_preset("lacss_small", weights="generalist")
cuts = (0.3, 0.4, 0.5, 0.65)
print(
    "| modality | max_overlap | AP50 | AP75 | "
    + " | ".join(f"F1 @ {c}" for c in cuts)
    + " | cells found @ 0.5 |"
)
print("|---|---|---|---|" + "---|" * len(cuts) + "---|")
for k, m in enumerate(MODALITIES):
    ds = RealisticCells(
        8, seed=2000 + k, modality=m, size=256, diameter=(8.0, 64.0), max_cells=None
    )
    samples = [ds[i] for i in range(8)]
    truths = [s.label for s in samples]
    for mo in (1.0, 0.5):
        preds = [predict_instances(model, s.image, min_score=0.2, max_overlap=mo) for s in samples]
        ap = coco_mask_ap([p[0] for p in preds], truths, [p[1]["scores"] for p in preds])
        f1s, found = [], 0
        for c in cuts:
            labs = []
            for lab, det in preds:
                n = int((det["scores"] >= c).sum())
                labs.append(np.where(lab > n, 0, lab))
                found += n if c == 0.5 else 0
            f1s.append(object_accuracy(labs, truths, 0.5).f1)
        print(
            f"| {m} | {mo:g} | {ap.ap50:.3f} | {ap.ap75:.3f} | "
            + " | ".join(f"{f:.3f}" for f in f1s)
            + f" | {found} / {sum(int(t.max()) for t in truths)} |",
            flush=True,
        )

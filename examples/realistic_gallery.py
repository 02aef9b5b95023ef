"""Picture gallery of the realistic synthetic generator (``lacss_core.data.realistic``).

Usage::

    python examples/realistic_gallery.py --out docs/realistic_gallery.png [--per-modality 6]

Writes one PNG: a row per modality (nuclei, cytoplasm, brightfield, phase), each image shown
as a microscopist would look at it (contrast stretched between its 0.5 and 99.8 percentiles),
and under it the same image with the outlines of its exact labels in colour. The seeds are
fixed, so the gallery is reproducible; nothing in it is selected by hand.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from scipy import ndimage

from lacss_core.data.realistic import MODALITIES, render_scene


def display(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` in [0, 1]: the first channel stretched between its 0.5 / 99.8 percentiles."""
    plane = image[..., 0].astype(np.float64)
    low, high = np.percentile(plane, [0.5, 99.8])
    return np.clip((plane - low) / max(high - low, 1e-9), 0, 1)


def outlines(grey: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``(H, W, 3)``: the grey image with each label's boundary pixels in a colour."""
    edge = label != ndimage.grey_erosion(label, size=3)
    edge &= label > 0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = np.random.default_rng(0).uniform(0.3, 1.0, (int(label.max()) + 1, 3))
    colours[:, 0] = 1.0
    rgb[edge] = colours[label[edge]]
    return rgb


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/realistic_gallery.png")
    parser.add_argument("--per-modality", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = args.per_modality
    fig, axes = plt.subplots(
        2 * len(MODALITIES), n, figsize=(2.2 * n, 4.6 * len(MODALITIES)), squeeze=False
    )
    for row, modality in enumerate(MODALITIES):
        for col in range(n):
            scene = render_scene((args.seed, row, col), modality=modality, size=args.size)
            grey = display(scene.image)
            p = scene.params
            top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
            top.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            bottom.imshow(outlines(grey, scene.label), interpolation="nearest")
            top.set_title(
                f"{modality} {p['style'] if p['style'] != modality else ''}\n"
                f"d={p['diameter']:.0f}px {p['layout']} {p['bit_depth']}-bit",
                fontsize=7,
            )
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(args.out)), ".tmp-gallery.png")
    fig.savefig(tmp, dpi=56)
    plt.close(fig)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Every ```python block of README.md runs as written (issue 11, item 5).

Each block runs on its own in a fresh ``python`` process (so it must do its own imports, in the
right order), under this process's Keras backend, with the working directory set to a temporary
folder holding the files the README's examples read. CI runs the suite once per backend, so each
block runs on JAX and on PyTorch, unless it says otherwise.

A block declares what it needs in an HTML comment right before its fence (invisible on GitHub),
one ``key: value`` per line::

    <!-- readme-test
    backend: torch
    fixtures: demo_folder
    replace: steps=5000 -> steps=2
    -->
    ```python
    ...
    ```

- ``backend: jax`` or ``torch``: run only in that backend's pass (for code written against one
  framework, e.g. the embedding examples). Default: every backend.
- ``fixtures: a, b``: files to create in the working directory first (see ``FIXTURES``):
  ``demo_folder`` is what ``lacss demo`` writes (``lacss_demo/model.keras`` (an untrained
  ``lacss_tiny``, one channel), ``lacss_demo/images/synthetic_00.tif``,
  ``lacss_demo/ground_truth/synthetic_00_masks.tif``); ``labelled_folders`` is ``data/train`` and
  ``data/val`` of ``IMAGE.tif`` + ``IMAGE_masks.tif`` pairs (synthetic cells).
- ``replace: OLD -> NEW`` (repeatable): a plain text substitution before the run, for sizes that
  are right for a user and too slow for CI (``steps=5000``); ``OLD`` must occur in the block.

Without a comment a block runs as is, with no files around it. A new block needs nothing more
unless it reads files (add a fixture here) or runs for minutes (add a ``replace``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BACKEND = keras.backend.backend()
KEYS = ("backend", "fixtures", "replace")

pytestmark = pytest.mark.slow


@dataclass
class Block:
    """One ```python block: its code, the README line of its first code line, its needs."""

    code: str
    line: int
    backend: str | None = None
    fixtures: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)

    def runnable_code(self) -> str:
        code = self.code
        for old, new in self.replace:
            if old not in code:
                raise ValueError(f"README line {self.line}: 'replace: {old}' is not in the block")
            code = code.replace(old, new)
        return code


_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_COMMENT = re.compile(r"<!--\s*readme-test\b(.*?)-->\s*", re.S)


def _declarations(text_before: str, line: int) -> dict:
    """The ``readme-test`` comment that ends right before a block (only blank space between),
    parsed."""
    options: dict = {"fixtures": [], "replace": []}
    found = _COMMENT.fullmatch(text_before[max(text_before.rfind("<!--"), 0) :])
    if not found:
        return options
    for entry in filter(None, (e.strip() for e in found.group(1).splitlines())):
        key, sep, value = (part.strip() for part in entry.partition(":"))
        if not sep or key not in KEYS:
            raise ValueError(f"README line {line}: bad readme-test entry {entry!r} (keys {KEYS})")
        if key == "backend":
            options["backend"] = value
        elif key == "fixtures":
            options["fixtures"] += [name.strip() for name in value.split(",") if name.strip()]
        else:
            old, arrow, new = value.partition(" -> ")
            if not arrow:
                raise ValueError(f"README line {line}: replace needs 'OLD -> NEW', got {value!r}")
            options["replace"].append((old, new))
    return options


def python_blocks(text: str) -> list[Block]:
    """Every ```python block of a Markdown text with its ``readme-test`` declarations."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        options = _declarations(text[: match.start()], line)
        if options.get("backend") not in (None, "jax", "torch"):
            raise ValueError(f"README line {line}: unknown backend {options['backend']!r}")
        blocks.append(Block(match.group(1), line, **options))
    return blocks


# ----------------------------------------------------------------------------- fixtures
def _write_pairs(images: Path, labels: Path, count: int, size: int, seed: int, name: str):
    """``count`` synthetic images as ``images/NAME_ii.tif`` and ``labels/NAME_ii_masks.tif``."""
    import tifffile

    from lacss_core.data import SyntheticCells
    from lacss_core.export import write_label_tiff

    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(SyntheticCells(count, size=size, n_cells=6, seed=seed)):
        tifffile.imwrite(images / f"{name}_{i:02d}.tif", sample.image[..., 0])
        write_label_tiff(labels / f"{name}_{i:02d}_masks.tif", sample.label)


def demo_folder(root: Path) -> None:
    """The files of ``lacss demo -o lacss_demo`` that the README reads (an untrained model)."""
    from lacss_core.models import Lacss

    demo = root / "lacss_demo"
    _write_pairs(demo / "images", demo / "ground_truth", 1, 128, seed=0, name="synthetic")
    model = Lacss.from_preset("lacss_tiny")
    model.build((None, None, None, 1))
    model.save(demo / "model.keras")


def labelled_folders(root: Path) -> None:
    """``data/train`` (4 images) and ``data/val`` (2), 96 px, IMAGE.tif + IMAGE_masks.tif."""
    for split, count, seed in (("train", 4, 1), ("val", 2, 2)):
        folder = root / "data" / split
        _write_pairs(folder, folder, count, 96, seed=seed, name="cells")


FIXTURES = {"demo_folder": demo_folder, "labelled_folders": labelled_folders}

BLOCKS = python_blocks(README.read_text())


def _block_id(block: Block) -> str:
    return f"line{block.line}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all blocks; each fixture is created once, when a block first needs it."""
    root = tmp_path_factory.mktemp("readme")
    made: set[str] = set()

    def prepare(names):
        for name in names:
            if name not in FIXTURES:
                raise ValueError(
                    f"unknown readme-test fixture {name!r} (known: {sorted(FIXTURES)})"
                )
            if name not in made:
                FIXTURES[name](root)
                made.add(name)
        return root

    return prepare


@pytest.mark.parametrize("block", BLOCKS, ids=_block_id)
def test_readme_block_runs(block, workdir):
    if block.backend not in (None, BACKEND):
        pytest.skip(f"a {block.backend} block: runs in the KERAS_BACKEND={block.backend} pass")
    cwd = workdir(block.fixtures)
    script = cwd / f"readme_line{block.line}.py"
    script.write_text(block.runnable_code())
    result = subprocess.run(
        [sys.executable, script.name],
        cwd=cwd,
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"README.md block at line {block.line} failed under {BACKEND}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )


# ----------------------------------------------------------------------------- the parser
def test_the_readme_has_python_blocks_and_each_is_found():
    text = README.read_text()
    assert len(BLOCKS) == text.count("```python") >= 4


def test_declarations_are_parsed_and_mistakes_are_loud():
    text = (
        "intro\n<!-- readme-test\nbackend: torch\nfixtures: demo_folder, labelled_folders\n"
        "replace: steps=5000 -> steps=2\n-->\n```python\ntrain(steps=5000)\n```\n\n"
        "```python\nprint(1)\n```\n"
    )
    first, second = python_blocks(text)
    assert (first.backend, first.fixtures) == ("torch", ["demo_folder", "labelled_folders"])
    assert first.runnable_code() == "train(steps=2)\n" and first.line == 8
    assert (second.backend, second.fixtures, second.replace) == (None, [], [])
    with pytest.raises(ValueError, match="bad readme-test entry"):
        python_blocks("<!-- readme-test\nbakend: torch\n-->\n```python\nx\n```\n")
    with pytest.raises(ValueError, match="unknown backend"):
        python_blocks("<!-- readme-test\nbackend: tensorflow\n-->\n```python\nx\n```\n")
    with pytest.raises(ValueError, match="is not in the block"):
        python_blocks("<!-- readme-test\nreplace: a -> b\n-->\n```python\nx\n```\n")[
            0
        ].runnable_code()


def test_fixtures_write_what_the_readme_reads(tmp_path):
    labelled_folders(tmp_path)
    from lacss_core.data import load_labelled_folder

    assert len(load_labelled_folder(tmp_path / "data" / "train")) == 4
    assert np.all([s.label.max() > 0 for s in load_labelled_folder(tmp_path / "data" / "val")])

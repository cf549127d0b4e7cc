"""plots: every PNG writer gives a whole, readable PNG of a plausible size, also from empty inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdpipe.evaluation.plots import bar_png, confusion_matrix_png, f1_vs_count_png, training_curves_png

SPECIES = ["Alpha_one", "Beta_two", "Gamma_three"]
HISTORY = [
    {"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/accuracy": 0.2 * e, "val/accuracy": 0.15 * e,
     "val/f1_macro": 0.1 * e, "train/lr": 1e-3, "train/backbone_lr": 1e-5}
    for e in (1, 2, 3)
]  # fmt: skip
ROWS = [
    {"species": "a", "support": 4, "train_count": 3, "f1": 0.5},
    {"species": "b", "support": 2, "train_count": 120, "f1": 0.9},
    {"species": "c", "support": 0, "train_count": 7, "f1": 0.0},  # not in test: left out of the plot
]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a complete PNG, and no temporary left beside it."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")  # whole, not cut
    assert len(data) > 2000
    with Image.open(path) as image:
        image.verify()  # chunk CRCs
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 100 < width < 5000 and 50 < height < 5000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # atomic: no .partial left behind
    return width, height


WRITERS = {
    "confusion": lambda target: confusion_matrix_png(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), SPECIES, target,
                                                     "test"),
    "f1_vs_count": lambda target: f1_vs_count_png(ROWS, target, 50, "F1 against training recordings"),
    "curves": lambda target: training_curves_png(HISTORY, target),
    "curves_without_some_keys": lambda target: training_curves_png([{"epoch": 1, "train/loss": 0.5}], target),
    "bars": lambda target: bar_png(SPECIES, [0.1, 0.5, 0.9], target, "F1", "F1-macro"),
    "bars_with_gaps": lambda target: bar_png(SPECIES, {"ours": [0.2, None, 0.4], "study": [None, None, 0.3]}, target,
                                             "F1 per phase", "F1-macro"),
}  # fmt: skip


@pytest.mark.parametrize("name", WRITERS)
def test_each_writer_gives_a_valid_png(name, tmp_path):
    target = tmp_path / "out" / f"{name}.png"  # the folder is made as needed
    WRITERS[name](target)
    png_size(target)


def test_pngs_are_reproducible_so_dvc_sees_no_change(tmp_path):
    for folder in ("a", "b"):
        WRITERS["bars_with_gaps"](tmp_path / folder / "bars.png")
    assert (tmp_path / "a" / "bars.png").read_bytes() == (tmp_path / "b" / "bars.png").read_bytes()


def test_figures_grow_with_their_content(tmp_path):
    many = [f"species_{i:02d}" for i in range(40)]
    y = np.arange(40)
    confusion_matrix_png(y[:3], y[:3], many[:3], tmp_path / "few" / "cm.png", "few")
    confusion_matrix_png(y, y[::-1], many, tmp_path / "many" / "cm.png", "many")
    assert png_size(tmp_path / "many" / "cm.png")[1] > png_size(tmp_path / "few" / "cm.png")[1]
    bar_png(many[:2], [0.1, 0.2], tmp_path / "short" / "bar.png", "t", "x")
    bar_png(many, list(np.linspace(0, 1, 40)), tmp_path / "tall" / "bar.png", "t", "x")
    assert png_size(tmp_path / "tall" / "bar.png")[1] > 3 * png_size(tmp_path / "short" / "bar.png")[1]


@pytest.mark.parametrize(
    "write",
    [
        lambda target: confusion_matrix_png(np.array([], dtype=int), np.array([], dtype=int), SPECIES, target, "t"),
        lambda target: f1_vs_count_png([], target, 50, "no species in test"),
        lambda target: f1_vs_count_png(ROWS[2:], target, 50, "only unsupported species"),
        lambda target: training_curves_png([], target),
        lambda target: bar_png([], [], target, "no phases run", "F1-macro"),
        lambda target: bar_png([], {"ours": [], "study": []}, target, "no phases run", "F1-macro"),
    ],
    ids=["confusion", "f1_vs_count", "f1_vs_count_unsupported", "curves", "bars", "bar_series"],
)
def test_empty_inputs_still_give_a_png(write, tmp_path):
    write(tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(b"\x89PNG")
    with Image.open(tmp_path / "empty.png") as image:
        image.verify()

"""Labels or landmarks that end worse than at the start are reported (the engine's guard cannot see them)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from omnireg.core import Grid, Image
from omnireg.pipeline import RegistrationRequest, run_pipeline
from omnireg.pipeline.outputs import worse_than_the_start



def test_lines_name_the_dice_and_the_tre_that_fell():
    ev = {"labels": {"dice_mean_before": 0.852, "dice_mean": 0.764},
          "landmarks": {"before": {"tre_mean_mm": 2.0}, "after": {"tre_mean_mm": 2.5}}}
    assert worse_than_the_start(ev) == ["mean Dice 0.852 at the start, 0.764 after",
                                        "mean landmark error 2.00 mm at the start, 2.50 mm after"]
    ev = {"labels": {"dice_mean_before": 0.852, "dice_mean": 0.8515},
          "landmarks": {"before": {"tre_mean_mm": 2.0}, "after": {"tre_mean_mm": 1.0}}}
    assert worse_than_the_start(ev) == []


def test_a_method_that_moves_the_labels_away_is_reported(tmp_path, caplog, replay_method):
    grid = Grid(shape=(32, 32), spacing=(1.0, 1.0))
    yy, xx = np.mgrid[:32, :32]
    disc = torch.as_tensor(((yy - 16) ** 2 + (xx - 16) ** 2 < 36).astype(np.int16))[None]
    image = Image(disc.float() * 100 + torch.rand(1, 32, 32), grid)
    labels = Image(disc, grid)
    shift = np.eye(3)
    shift[0, 2] = 8.0  # 8 mm off: the disc leaves itself
    with caplog.at_level(logging.WARNING, logger="omnireg.pipeline.outputs"):
        run = run_pipeline(RegistrationRequest(fixed=image, moving=image, method=replay_method(shift),
                                               fixed_labels=labels, moving_labels=labels, out_dir=tmp_path / "out",
                                               report=False))
    lines = run.summary["evaluation"]["worse_than_start"]
    assert len(lines) == 1 and lines[0].startswith("mean Dice 1.000 at the start")
    assert "worse than the start: mean Dice 1.000" in caplog.text

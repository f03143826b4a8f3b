"""A registration method written outside omnireg, for the pipeline's tests."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from omnireg.pipeline import MethodResult, RegistrationMethod
from omnireg.transforms import Affine, resample


class ReplayMethod(RegistrationMethod):
    """Register by returning a known matrix (fixed -> moving world mm); a method in twenty lines."""

    name = "replay"

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)

    def check(self, fixed, moving) -> None:
        if self.matrix.shape != (fixed.ndim + 1, fixed.ndim + 1):
            raise ValueError(f"replay: a {fixed.ndim}D pair needs a {fixed.ndim + 1}x{fixed.ndim + 1} matrix")

    def run(self, fixed, moving, *, fixed_mask=None, moving_mask=None, initial=None, callbacks=()):
        t0 = time.perf_counter()
        affine = Affine.from_matrix(torch.as_tensor(self.matrix), learnable=False)
        warped = resample(moving, affine, onto=fixed.grid, interp="linear")
        return MethodResult(transform=affine, linear=affine, deformable=None, warped=warped, history=[],
                            metric_before={}, metric_after={}, runtime_s=time.perf_counter() - t0, stage_runtimes_s=[],
                            config={"matrix": self.matrix.tolist()},
                            method=self.settings())


@pytest.fixture(scope="session")
def replay_method():
    """The class :class:`ReplayMethod` (a method in twenty lines, from outside the package)."""
    return ReplayMethod

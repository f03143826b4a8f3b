"""Part (e) of ``benchmarks/disa.py``: where each objective's optimum lies, how sharp it is, and DISA's speed floor.

Three objectives of an affine transform ``A`` (fixed world -> moving world) are compared on the same known-truth
case, on the fixed image's full-resolution grid:

- ``disa``: what a DISA registration optimises: the fixed image's features at its stride-4 nodes against the
  moving image's stride-4 features interpolated at ``A(node)`` (norm restored; ``DISAFeatures``);
- ``disa-recomputed``: the network's own similarity of the pair aligned by ``A``: the moving image resampled
  through ``A`` onto the fixed grid and its features computed there (no feature interpolation: the quantity the
  network was trained to make equal to LC2; ``DISA`` on the resampled image, differentiable through the network);
- ``lc2``: exact dense LC2 of the same resampled image (radius 3, the registration default).

For each: the **translation profile** (values at 0, +-1, +-2, +-4 mm along each world axis from the truth; the
mean relative drop at 2 and 4 mm and the best of those shifts per axis) and the **optimum** that L-BFGS reaches
from the truth over the 12 affine parameters (mean target error over the brain). An objective whose optimum lies
``d`` mm from the truth cannot register better than about ``d`` mm, whatever the optimiser, pyramid or start.

**Speed floor**: the time of the two feature extractions that every DISA registration needs at its finest level
(the fixed image and the moving image, each once). LC2's registration time divided by it is an upper bound on
DISA's speed-up over LC2 on that case (the bound of a registration whose optimisation costs nothing).
"""

from __future__ import annotations

import math
import time

SHIFTS_MM = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)
OBJECTIVES = ("disa", "disa-recomputed", "lc2")


def _local_affine(p, base, centre):
    """``base @ (I + [0.01 P | t - 0.01 P c])``: 9 matrix entries scaled by 0.01 (about radians) and 3 mm of
    translation, about ``centre`` (float64 tensors)."""
    import torch

    lin = p[:9].reshape(3, 3) * 0.01
    top = torch.cat([torch.eye(3, dtype=p.dtype) + lin, (p[9:] - lin @ centre)[:, None]], dim=1)
    return base @ torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=p.dtype)], dim=0)


class Objectives:
    """The three objectives (module docstring) of one case, as functions of a ``(4, 4)`` float64 matrix."""

    def __init__(self, case, weights=None) -> None:
        import torch

        from omnireg.core.intensity import robust_normalize
        from omnireg.similarity.disa import DISA, DISAFeatures
        from omnireg.similarity.lc2 import LC2

        self.case = case
        self.disa = DISA(weights=weights)
        self.lc2 = LC2()
        self.features = DISAFeatures()
        # the engine's inputs at the finest level: robust [0, 1] intensities
        self.f = robust_normalize(case.fixed.batch().float(), None)
        self.m = robust_normalize(case.moving.batch().float(), None)
        self.spacing = case.fixed.grid.spacing
        with torch.no_grad():
            self.ff, self.fgrid = self.disa.feature_level(self.f, case.fixed.grid)
            self.mf, self.mfgrid = self.disa.feature_level(self.m, case.moving.grid, moving=True)
        f64 = dict(dtype=torch.float64)
        self.nodes = self.fgrid.points("world", **f64)
        self.voxels = case.fixed.grid.points("world", **f64)
        self.mf_vox = torch.as_tensor(self.mfgrid.voxel_from_world(), **f64)
        self.m_vox = torch.as_tensor(case.moving.grid.voxel_from_world(), **f64)

    @staticmethod
    def _map(points, matrix, vox_from_world):
        both = vox_from_world @ matrix
        return (points @ both[:3, :3].T + both[:3, 3]).float().unsqueeze(0)

    def warped_image(self, matrix):
        from omnireg.core import sample

        return sample(self.m, self._map(self.voxels, matrix, self.m_vox), interp="linear", padding="zeros")

    def __call__(self, name: str, matrix):
        from omnireg.core import sample

        if name == "disa":
            moved = sample(self.mf, self._map(self.nodes, matrix, self.mf_vox), interp="linear", padding="zeros")
            return self.features(self.ff, moved)[0]
        if name == "disa-recomputed":
            return self.disa(self.f, self.warped_image(matrix), spacing=self.spacing)[0]
        if name == "lc2":
            return self.lc2(self.f, self.warped_image(matrix), spacing=self.spacing)[0]
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {name!r}")

    def feature_seconds(self, repeats: int = 3) -> tuple[float, float]:
        """Best-of-``repeats`` time of the fixed and of the moving feature extraction (seconds)."""
        import torch

        best = [math.inf, math.inf]
        with torch.no_grad():
            for _ in range(repeats):
                t0 = time.perf_counter()
                self.disa.feature_level(self.f, self.case.fixed.grid)
                t1 = time.perf_counter()
                self.disa.feature_level(self.m, self.case.moving.grid, moving=True)
                t2 = time.perf_counter()
                best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
        return best[0], best[1]


def translation_profile(obj: Objectives, name: str) -> dict:
    """Values at ``SHIFTS_MM`` along each world axis from the truth, the mean relative drop at 2 and 4 mm (over
    the six directions) and the best shift per axis."""
    import numpy as np
    import torch

    truth = torch.as_tensor(obj.case.true_matrix, dtype=torch.float64)
    values = []
    with torch.no_grad():
        for axis in range(3):
            row = []
            for s in SHIFTS_MM:
                shift = torch.eye(4, dtype=torch.float64)
                shift[axis, 3] = s
                row.append(float(obj(name, truth @ shift)))
            values.append(row)
    v = np.asarray(values)
    at0 = v[:, SHIFTS_MM.index(0.0)]

    def drop(mm):
        pair = v[:, [SHIFTS_MM.index(-mm), SHIFTS_MM.index(mm)]]
        return float(np.mean((at0[:, None] - pair) / np.abs(at0[:, None])))

    return {"shifts_mm": list(SHIFTS_MM), "values": values, "drop_2mm": drop(2.0), "drop_4mm": drop(4.0),
            "best_shift_mm": [SHIFTS_MM[int(i)] for i in v.argmax(1)]}


def optimum_from_truth(obj: Objectives, name: str, centre, mask, iterations: int = 40) -> dict:
    """L-BFGS (strong Wolfe) over the 12 affine parameters, started at the true matrix: mean target error over
    ``mask`` of the optimum it reaches, and the time."""
    import torch

    from omnireg.transforms import Affine

    truth = torch.as_tensor(obj.case.true_matrix, dtype=torch.float64)
    c = torch.as_tensor(centre, dtype=torch.float64)
    p = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -obj(name, _local_affine(p, truth, c))
        loss.backward()
        return loss

    t0 = time.perf_counter()
    opt.step(closure)
    est = Affine.from_matrix(_local_affine(p.detach(), truth, c), dtype=torch.float32, learnable=False)
    err = obj.case.target_error(est, mask=mask)
    return {"mean_mm": float(err.mean()), "max_mm": float(err.max()), "runtime_s": time.perf_counter() - t0}


def limits(case, mask, centre, *, weights=None, lc2_runtime_s: float | None = None) -> dict:
    """Part (e) for one case: profiles, optima from the truth and the speed floor (module docstring)."""
    obj = Objectives(case, weights)
    tf, tm = obj.feature_seconds()
    rec = {"feature_s": {"fixed": tf, "moving": tm},
           "fixed_shape": list(case.fixed.grid.shape), "moving_shape": list(case.moving.grid.shape),
           "lc2_registration_s": lc2_runtime_s,
           "speedup_bound": None if not lc2_runtime_s else lc2_runtime_s / (tf + tm),
           "profile": {}, "optimum": {}}
    for name in OBJECTIVES:
        rec["profile"][name] = translation_profile(obj, name)
        rec["optimum"][name] = optimum_from_truth(obj, name, centre, mask)
    return rec

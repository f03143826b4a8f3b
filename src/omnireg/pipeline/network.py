"""A registration network as a registration method: inference in the network's frame, results in world space.

:class:`NetworkMethod` runs, for a fixed and a moving image on any grids:

1. the engine's linear stages (``affine``; a :class:`~omnireg.optim.RegistrationConfig` of rigid/affine
   stages, by default the ``affine`` preset's), giving the world matrix ``L`` (fixed -> moving); skipped with
   ``affine=None`` (then ``L`` is the ``initial`` matrix, or the identity);
2. the **network's frame** (:class:`NetworkFrame`: the model's training voxel size, 2 mm, and axes, RAS,
   unless the model file's ``meta["frame"]`` says otherwise): a grid ``G`` with that spacing and direction
   covering the fixed image's field of view, padded evenly to a multiple of the network's stride
   (:func:`omnireg.networks.registration.frame_grid`);
3. both images brought into ``G``, intensities scaled to ``[0, 1]`` by their robust [0.5, 99.5] % range on
   their own grids (as the synthesised training images are), smoothed where finer than ``G`` (anti-aliasing):
   ``fixed_G(x) = fixed(x)`` and ``moving_G(x) = moving(L(x))`` for the voxel centres ``x`` of ``G``;
4. the network's prediction: a displacement ``u`` in voxel units of ``G`` (pull: voxel ``p`` of
   ``fixed_G`` maps to voxel ``p + u(p)`` of ``moving_G``), and, for diffeomorphic models, the displacement
   of the inverse map ``exp(-v)``;
5. world mm on ``G``: ``U(x) = direction_G @ diag(spacing_G) @ u(p(x))``, so the deformable part is
   ``D(x) = x + U(x)`` (a :class:`~omnireg.transforms.DisplacementField` on ``G``, written at that
   resolution) and the whole mapping ``T = L ∘ D``. The inverse part ``D^-1`` is the network's own
   ``exp(-v)`` on ``G`` (exact up to the integration), so ``T^-1 = D^-1 ∘ L^-1``.

``metric_before``/``metric_after`` are the similarity ``metric`` (mutual information by default) before and
after, computed as the engine computes its own (:func:`omnireg.optim.engine.similarity_before_after`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import Grid, Image
from ..core.filters import gaussian_blur
from ..networks.registration import RegistrationNetwork, frame_grid
from ..networks.segmenter import normalize_intensities
from .method import MethodResult, RegistrationMethod

__all__ = ["NetworkFrame", "NetworkMethod", "load_network", "network_input", "world_displacement"]

log = logging.getLogger(__name__)

#: the voxel size of omnireg's registration trainings (mm)
DEFAULT_SPACING_MM = 2.0


@dataclass(frozen=True)
class NetworkFrame:
    """The frame a registration network was trained in: isotropic ``spacing_mm`` voxels whose tensor axes
    point along the columns of ``direction`` (world RAS; ``None``: RAS)."""

    spacing_mm: float = DEFAULT_SPACING_MM
    direction: tuple | None = None

    @classmethod
    def from_meta(cls, meta: dict | None) -> "NetworkFrame":
        """The frame recorded in a model file's ``meta["frame"]`` (``spacing_mm``, ``direction``), else the default."""
        frame = (meta or {}).get("frame") or {}
        if not isinstance(frame, dict):
            raise ValueError(f"meta: expected 'frame' to be a mapping, got {frame!r}")
        direction = frame.get("direction")
        return cls(float(frame.get("spacing_mm", DEFAULT_SPACING_MM)),
                   None if direction is None else tuple(tuple(float(v) for v in row) for row in direction))

    def grid(self, fixed: Grid, multiple: int = 1) -> Grid:
        """The frame's grid covering ``fixed``'s field of view (shape a multiple of ``multiple``)."""
        return frame_grid(fixed, spacing_mm=self.spacing_mm, direction=self.direction, multiple=multiple)


def _model_file(model: str | os.PathLike, ndim: int, what: str) -> Path:
    """The file of ``model``: an existing path, or a shipped name (``voxelmorph-diff`` -> ``voxelmorph-diff_3d``)."""
    from ..networks.store import packaged_weights

    path = Path(model)
    if path.is_file():
        return path
    if path.suffix or os.sep in str(model):
        raise FileNotFoundError(f"{what}: no such file: {path}")
    name = str(model) if re.search(r"_[23]d$", str(model)) else f"{model}_{ndim}d"
    try:
        return packaged_weights(name)
    except ValueError as exc:
        raise ValueError(f"{what}: {str(exc).partition(': ')[2]} (give a model file, or a shipped name)") from None


def load_network(model: str | os.PathLike, *, ndim: int, device: str = "cpu", what: str = "model"
                 ) -> tuple[RegistrationNetwork, dict, Path]:
    """Load a registration network from a model file or a shipped name.

    Args:
        model: a model file (:func:`omnireg.networks.store.save_model`) or a shipped name.
        ndim: the images' dimension (chooses ``<name>_<ndim>d`` among the shipped weights).
        device: where the network runs.
        what: the argument's name in messages (``--model`` on the command line).

    Returns:
        ``(network in eval mode, the file's meta, the file's path)``.

    Raises:
        FileNotFoundError, ValueError: no such file or name, not a model file, weights that do not match
            the file's architecture, or a model that is not a registration network (one line naming ``what``).
    """
    from ..networks.store import load_model

    path = _model_file(model, ndim, what)
    try:
        net, meta = load_model(path, map_location=device)
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0]
        raise type(exc)(f"{what}: {msg.partition(': ')[2] if msg.startswith('weights: ') else msg}") from None
    if not isinstance(net, RegistrationNetwork):
        raise ValueError(f"{what}: {path} holds a {type(net).__name__}, not a registration network")
    return net, meta, path


def network_input(image: Image, matrix: np.ndarray | None, target: Grid) -> torch.Tensor:
    """``image`` brought into the network's frame ``target``: ``out(x) = image(M(x))`` at its voxel centres.

    Intensities are scaled to ``[0, 1]`` by the image's robust range on its own grid and clipped; axes finer
    than ``target``'s spacing are first smoothed with a Gaussian of ``sigma = 0.5 sqrt(t^2 - s^2)`` mm;
    linear interpolation, zero outside the image.

    Args:
        image: the image (any grid).
        matrix: ``M``, a ``(D+1, D+1)`` world matrix (target world -> image world), or None (identity).
        target: the network's grid.

    Returns:
        ``(1, C, *target.shape)`` float32.
    """
    from ..transforms import Affine, resample

    data = normalize_intensities(image.batch().float())
    t = float(min(target.spacing))
    sigma = [0.5 * math.sqrt(max(t * t - s * s, 0.0)) / s for s in image.grid.spacing]
    if any(v > 0.1 for v in sigma):
        data = gaussian_blur(data, sigma)
    transform = None if matrix is None else Affine.from_matrix(torch.as_tensor(matrix, dtype=torch.float64),
                                                               learnable=False)
    return resample(Image(data[0], image.grid), transform, onto=target, interp="linear").batch().float()


def world_displacement(displacement_vox: torch.Tensor, grid: Grid):
    """A network's voxel displacement ``(1, D, *S)`` on ``grid`` as a world-mm DisplacementField on ``grid``.

    ``U = direction @ diag(spacing) @ u`` at every voxel (vectors, no origin); the field is detached, float32, on
    the CPU, not learnable.
    """
    from ..transforms import DisplacementField

    u = displacement_vox.detach().to("cpu", torch.float32)
    return DisplacementField.from_voxel_displacement(u, grid, learnable=False)


class NetworkMethod(RegistrationMethod):
    """A registration network, after the engine's linear stages (module docstring).

    Args:
        model: a model file, a shipped name (``voxelmorph-diff``: ``voxelmorph-diff_<D>d``), or a
            :class:`~omnireg.networks.registration.RegistrationNetwork` (then ``meta`` is its provenance).
        affine: the engine configuration of the linear stages run first (only linear stages), a preset name,
            or None to skip them (``--no-affine``).
        device: where the network (and the affine stages) run.
        seed: the affine stages' seed.
        metric, metric_options: the similarity reported before/after (mutual information, 32 bins).
        frame: the network's frame; default: the model file's ``meta["frame"]``, else 2 mm RAS.
        meta: provenance of a network given as an object.
        what: the model's name in messages (``--model``).
    """

    name = "network"

    def __init__(self, model: Any, *, affine: Any = "affine", device: str = "cpu", seed: int = 0, metric: str = "mi",
                 metric_options: dict | None = None, frame: NetworkFrame | None = None, meta: dict | None = None,
                 what: str = "model") -> None:
        from ..optim import RegistrationConfig

        self.what, self.device, self.frame = what, str(device), frame
        self.metric, self.metric_options = metric, dict({"bins": 32} if metric_options is None else metric_options)
        self.net: RegistrationNetwork | None = None
        self.meta: dict = dict(meta or {})
        self.path: Path | None = None
        self._source = model
        if isinstance(model, RegistrationNetwork):
            self.net = model.eval()
        elif not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"{what}: expected a model file, a shipped name or a RegistrationNetwork, got {type(model).__name__}")
        elif (Path(model).suffix or os.sep in str(model)) and not Path(model).is_file():
            raise FileNotFoundError(f"{what}: no such file: {model}")
        self.affine: RegistrationConfig | None = None
        if affine is not None:
            from .inputs import check_config

            cfg = check_config(affine)
            if not all(st.kind.is_linear for st in cfg.stages):
                raise ValueError(f"affine: expected linear stages only (the network is the deformable part), "
                                 f"got {[st.kind.value for st in cfg.stages]}")
            cfg.seed, cfg.device = int(seed), self.device
            self.affine = cfg

    def check(self, fixed: Image, moving: Image) -> None:
        """Load the model (for the images' dimension) and check that it fits the images."""
        if self.net is None:
            self.net, self.meta, self.path = load_network(self._source, ndim=fixed.ndim, device=self.device,
                                                          what=self.what)
        if self.frame is None:
            self.frame = NetworkFrame.from_meta(self.meta)
        net = self.net.to(self.device)
        if net.ndim != fixed.ndim:
            raise ValueError(f"{self.what}: a {net.ndim}D network cannot register {fixed.ndim}D images")
        if fixed.channels + moving.channels != net.in_channels:
            raise ValueError(f"{self.what}: the network takes {net.in_channels} channels (moving and fixed together), "
                             f"the images have {moving.channels} + {fixed.channels}")

    def settings(self) -> dict:
        out: dict = {"name": self.name, "affine": self.affine is not None}
        if self.net is not None:
            cfg = getattr(self.net, "config", None)
            out.update(kind=getattr(self.net, "kind", type(self.net).__name__),
                       model=None if self.path is None else str(self.path),
                       architecture=cfg, diffeomorphic=bool(self.net.diffeomorphic), meta=self.meta)
        if self.frame is not None:
            out["frame"] = {"spacing_mm": self.frame.spacing_mm, "direction": self.frame.direction}
        return out

    def _linear(self, fixed, moving, fixed_mask, moving_mask, initial, callbacks):
        """The linear part (world matrix) and the engine's record of it."""
        from .. import optim

        if self.affine is None:
            d = fixed.ndim
            matrix = np.eye(d + 1) if initial is None else np.asarray(initial, dtype=np.float64)
            return matrix, None
        res = optim.register(fixed, moving, config=self.affine, fixed_mask=fixed_mask, moving_mask=moving_mask,
                             initial=initial, callbacks=list(callbacks))
        return res.linear.matrix()[0].detach().cpu().double().numpy(), res

    def run(self, fixed, moving, *, fixed_mask=None, moving_mask=None, initial=None, callbacks=()) -> MethodResult:
        from .. import transforms as T
        from ..optim.engine import similarity_before_after

        t0 = time.perf_counter()
        self.check(fixed, moving)
        net = self.net
        matrix, linear_run = self._linear(fixed, moving, fixed_mask, moving_mask, initial, callbacks)
        t1 = time.perf_counter()
        grid = self.frame.grid(fixed.grid, int(getattr(net, "stride", 1)))
        f = network_input(fixed, None, grid).to(self.device)
        m = network_input(moving, matrix, grid).to(self.device)
        with torch.no_grad():
            out = net(m, f)
        field = world_displacement(out.displacement[:1], grid)
        inverse = None if out.inverse is None else world_displacement(out.inverse[:1], grid)
        affine = T.Affine.from_matrix(torch.as_tensor(matrix, dtype=torch.float64), learnable=False)
        total = T.compose(affine.to(torch.float32), field)
        with torch.no_grad():
            warped = T.resample(moving, total, onto=fixed.grid, interp="linear")
        before, after = similarity_before_after(fixed, moving, total, metric=self.metric,
                                                metric_options=self.metric_options, fixed_mask=fixed_mask,
                                                device=self.device)
        t2 = time.perf_counter()
        log.info("network %s on a %s grid of %s mm: %.2f s", self.settings().get("kind"), grid.shape,
                 self.frame.spacing_mm, t2 - t1)
        steps = getattr(getattr(net, "config", None), "int_steps", None)
        return MethodResult(
            transform=total, linear=affine, deformable=field, warped=warped,
            history=[] if linear_run is None else linear_run.history,
            metric_before=before, metric_after=after, runtime_s=t2 - t0,
            stage_runtimes_s=([] if linear_run is None else list(linear_run.stage_runtimes_s)) + [t2 - t1],
            config={"affine": None if linear_run is None else linear_run.config, "network_grid": grid.to_dict()},
            stage_checks=[] if linear_run is None else linear_run.stage_checks,
            initialization=({"method": "given" if initial is not None else "none"} if linear_run is None
                            else linear_run.initialization),
            method=self.settings(),
            deformable_inverse=inverse,
            inverse_method=None if inverse is None else (
                f"the network's exp(-v) (scaling and squaring, {steps} steps)" if steps else "the network's inverse"),
        )

"""Training images synthesised from label maps (SynthSeg / SynthMorph style), on CPU or CUDA.

From a label map of class indices the synthesiser makes an image and the label map that goes with it:

1. **Deformation**: a random smooth diffeomorphism ``phi(x) = A(x + u(x))``: ``u`` integrates a
   stationary velocity field (normal noise on a coarse grid of ``deform_spacing_vox`` voxels, standard
   deviation drawn uniformly in ``[0, deform_std_max_vox]``, upsampled linearly) by scaling and squaring
   with ``svf_steps`` steps on a grid of half that spacing
   (:func:`omnireg.networks.registration.integrate_velocity_voxels`), upsampled linearly to the full grid; ``A`` is an optional small
   affine about the centre. The labels are pulled through it with nearest neighbour
   (``labels_out(x) = labels_in(phi(x))``, integer dtype kept) and the image is rendered **from the
   deformed labels**, so image and labels share their geometry exactly.
2. **Contrast**: one mean per class, drawn uniformly in ``[0, 1]`` (``random`` mode: every image a new
   contrast) or from the T1-like table :data:`~omnireg.training.labelmaps.T1_MEANS` with jitter (``t1``
   mode; classes without an entry, e.g. extra-cerebral tissue, are drawn uniformly), and a within-class
   Gaussian noise level drawn uniformly in ``[0, noise_max]``. In ``random`` mode a pair is drawn T1-like
   (both images) with probability ``t1_fraction``: a curriculum, since a small network trained on random
   contrasts alone from the start learns to predict a zero field (README, "Learning-based registration");
   with probability ``shared_contrast_fraction`` a random pair's two images share one random set of class
   means (noise level, blur, bias and gamma still drawn per image): any contrast, but the same on both sides.
3. **Degradation**: Gaussian blur (sigma uniform in ``[0, blur_max_vox]`` voxels), a smooth
   multiplicative bias field ``exp(b)`` (``b`` normal on a ``bias_points^D`` grid with standard deviation
   uniform in ``[0, bias_max]``, upsampled linearly), min-max normalisation to ``[0, 1]``, gamma
   ``x^exp(g)`` with ``g ~ N(0, gamma_std)``, normalisation to ``[0, 1]`` again.

Randomness comes from one ``torch.Generator`` per batch item (a CPU generator; large noise arrays are
drawn on the data's device from a generator seeded by it), so an item's image depends only on its
generator's seed, not on the batch size or on how a batch is split between processes.

Convention:
    Label maps are ``(N, 1, *S)`` integer class indices ``0 .. K-1`` (class 0 = background) and
    ``values[k]`` is the FreeSurfer number of class ``k`` (see :mod:`omnireg.training.labelmaps`).
    Displacements are ``(N, D, *S)`` in voxels, components in tensor-axis order, pull:
    ``out(x) = in(x + u(x))``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import torch
import torch.nn.functional as F

from ..core.enums import as_enum
from ..core.filters import gaussian_blur
from ..networks.registration import integrate_velocity_voxels, warp_voxels
from .labelmaps import t1_means
from .loop import FitConfig

__all__ = [
    "ContrastMode",
    "PairMode",
    "SynthesisConfig",
    "SynthesizedImages",
    "SyntheticPair",
    "check_synthetic_run",
    "draw_contrast",
    "random_displacement",
    "render_image",
    "synthesize",
    "synthesize_pair",
]


class ContrastMode(str, Enum):
    """How class intensities are drawn: ``random`` (uniform, any contrast) or ``t1`` (T1-like table)."""

    RANDOM = "random"
    T1 = "t1"


class PairMode(str, Enum):
    """Training pairs: ``inter`` (two different subjects) or ``intra`` (one subject, two deformations)."""

    INTER = "inter"
    INTRA = "intra"


@dataclass
class SynthesisConfig:
    """Settings of the synthesiser (module docstring); lengths in voxels of the label map's grid.

    Attributes:
        mode: :class:`ContrastMode` (``random`` or ``t1``).
        noise_max: largest within-class noise standard deviation (means are in ``[0, 1]``).
        blur_max_vox: largest Gaussian blur sigma.
        bias_max: largest standard deviation of the log bias field.
        bias_points: control points per axis of the bias field (>= 2).
        gamma_std: standard deviation of the log gamma exponent.
        t1_jitter: standard deviation of the per-class jitter of the T1 table (``t1`` mode).
        background_zero: probability that the background is black (mean 0, no noise) in ``random`` mode.
        t1_fraction: in ``random`` mode, the probability that a pair (both images) is drawn T1-like instead.
        shared_contrast_fraction: in ``random`` mode, the probability that a (not T1-like) pair's two images share
            one random contrast (class means and noise levels).
        strip_prob: probability that classes without a T1 table entry (extra-cerebral tissue) become
            background ("skull stripping"), applied to the label map before anything else.
        deform_std_max_vox: largest standard deviation of the velocity noise (0 = no deformation).
        deform_spacing_vox: spacing of the velocity noise grid.
        svf_steps: scaling-and-squaring steps.
        rotation_max_deg, scale_max, translation_max_vox: range of the optional random affine
            (uniform in ``[-max, max]``; scale as ``1 + s``); all 0 = none.
    """

    mode: str = "random"
    noise_max: float = 0.05
    blur_max_vox: float = 1.0
    bias_max: float = 0.3
    bias_points: int = 5
    gamma_std: float = 0.25
    t1_jitter: float = 0.04
    background_zero: float = 0.3
    t1_fraction: float = 0.0
    shared_contrast_fraction: float = 0.0
    strip_prob: float = 0.0
    deform_std_max_vox: float = 2.0
    deform_spacing_vox: float = 8.0
    svf_steps: int = 7
    rotation_max_deg: float = 0.0
    scale_max: float = 0.0
    translation_max_vox: float = 0.0

    def __post_init__(self) -> None:
        self.mode = as_enum(self.mode, ContrastMode, "mode").value
        for name in ("noise_max", "blur_max_vox", "bias_max", "gamma_std", "t1_jitter", "deform_std_max_vox",
                     "rotation_max_deg", "scale_max", "translation_max_vox"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)!r}")
        for name in ("background_zero", "strip_prob", "t1_fraction", "shared_contrast_fraction"):
            if not 0 <= float(getattr(self, name)) <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        if int(self.bias_points) < 2:
            raise ValueError(f"bias_points: expected >= 2, got {self.bias_points!r}")
        if not float(self.deform_spacing_vox) >= 1:
            raise ValueError(f"deform_spacing_vox: expected >= 1, got {self.deform_spacing_vox!r}")
        if not isinstance(self.svf_steps, int) or self.svf_steps < 0:
            raise ValueError(f"svf_steps: expected a non-negative int, got {self.svf_steps!r}")
        if not float(self.scale_max) < 1:
            raise ValueError(f"scale_max: expected < 1, got {self.scale_max!r}")



def check_synthetic_run(config) -> None:
    """Coerce and check the fields every training run on synthesised label-map images shares (in place).

    ``config.synthesis`` and ``config.fit`` given as dicts (a config read back from JSON or YAML) become
    :class:`SynthesisConfig` and :class:`~omnireg.training.loop.FitConfig`; ``ndim``, ``batch_size``,
    ``val_every`` and ``axis`` (the slicing axis of 2D runs) are checked.

    Args:
        config: a training config with the fields ``synthesis``, ``fit``, ``ndim``, ``batch_size``,
            ``val_every`` and ``axis`` (the registration and segmenter training configs).

    Raises:
        ValueError: naming the first invalid field.
    """
    if isinstance(config.synthesis, dict):
        config.synthesis = SynthesisConfig(**config.synthesis)
    if isinstance(config.fit, dict):
        config.fit = FitConfig(**config.fit)
    if config.ndim not in (2, 3):
        raise ValueError(f"ndim: expected 2 or 3, got {config.ndim!r}")
    if int(config.batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, got {config.batch_size!r}")
    if int(config.val_every) < 0:
        raise ValueError(f"val_every: expected >= 0, got {config.val_every!r}")
    if config.axis not in (0, 1, 2):
        raise ValueError(f"axis: expected 0, 1 or 2, got {config.axis!r}")


@dataclass
class SynthesizedImages:
    """Images rendered from deformed label maps.

    Attributes:
        image: ``(N, 1, *S)`` float in ``[0, 1]``.
        labels: ``(N, 1, *S)`` class indices of the image (the deformed input labels), input dtype.
        displacement: ``(N, D, *S)`` voxels: ``labels(x) = labels_in(x + displacement(x))``.
    """

    image: torch.Tensor
    labels: torch.Tensor
    displacement: torch.Tensor


@dataclass
class SyntheticPair:
    """A training pair: ``moving`` and ``fixed`` images ``(N, 1, *S)`` and their class-index labels."""

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_labels: torch.Tensor
    fixed_labels: torch.Tensor


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _device_generator(g: torch.Generator, device: torch.device) -> torch.Generator:
    """``g`` itself on its own device, else a generator on ``device`` seeded from ``g``."""
    if torch.device(device).type == g.device.type:
        return g
    seed = int(torch.randint(0, 2**62, (), generator=g))
    return torch.Generator(device=device).manual_seed(seed)


def _upsample(coarse: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)


def _random_affine(d: int, config: SynthesisConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A random ``(M, t)`` (rotation times scale, translation in voxels) or None when the affine is off."""
    if config.rotation_max_deg == 0 and config.scale_max == 0 and config.translation_max_vox == 0:
        return None
    rmax, smax, tmax = math.radians(config.rotation_max_deg), config.scale_max, config.translation_max_vox
    mat = torch.eye(d, dtype=torch.float64)
    for a, b in [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]:
        angle = _uniform(g, -rmax, rmax)
        r = torch.eye(d, dtype=torch.float64)
        r[a, a], r[a, b], r[b, a], r[b, b] = math.cos(angle), -math.sin(angle), math.sin(angle), math.cos(angle)
        mat = r @ mat
    mat = mat @ torch.diag(torch.tensor([1 + _uniform(g, -smax, smax) for _ in range(d)], dtype=torch.float64))
    shift = torch.tensor([_uniform(g, -tmax, tmax) for _ in range(d)], dtype=torch.float64)
    return mat, shift


def random_displacement(
    shape: Sequence[int], config: SynthesisConfig, generator: torch.Generator, *,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random smooth diffeomorphic displacement ``(1, D, *S)`` in voxels (module docstring, step 1).

    ``phi(x) = M (x + u(x) - c) + c + t`` with ``u`` the integrated random velocity, ``c`` the centre of
    the grid and ``(M, t)`` the optional random affine; returns ``phi(x) - x``.
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    dgen = _device_generator(generator, torch.device(device))
    std = _uniform(generator, 0.0, float(config.deform_std_max_vox))
    coarse_shape = [max(2, int(math.ceil((s - 1) / config.deform_spacing_vox)) + 1) for s in shape]
    noise = torch.randn(1, d, *coarse_shape, generator=dgen, device=device, dtype=dtype) * std
    # integrate on a grid of half the noise spacing (the field is that smooth), then upsample
    step = max(1.0, float(config.deform_spacing_vox) / 2)
    work_shape = [max(2, int(math.ceil((s - 1) / step)) + 1) for s in shape]
    velocity = _upsample(noise, work_shape)  # in voxels of the full grid
    sp = torch.tensor([(s - 1) / max(w - 1, 1) for s, w in zip(shape, work_shape)], dtype=dtype, device=device).view(1, d, *([1] * d))
    u = integrate_velocity_voxels(velocity / sp, steps=int(config.svf_steps)) * sp if std > 0 else velocity
    u = _upsample(u, shape)
    affine = _random_affine(d, config, generator)
    if affine is None:
        return u
    mat, shift = affine
    centre = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64)
    axes = [torch.arange(s, dtype=dtype, device=u.device) for s in shape]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0) + u  # x + u(x)
    off = (centre + shift - mat @ centre).to(u).view(1, d, *([1] * d))
    mapped = torch.einsum("ab,nb...->na...", mat.to(u), points) + off
    return mapped - (points - u)


def draw_contrast(values: torch.Tensor, config: SynthesisConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and within-class noise levels of one image (module docstring, step 2).

    Args:
        values: ``(K,)`` FreeSurfer number of each class (class 0 = background).
        config: the synthesis settings (``mode``).
        generator: CPU generator.

    Returns:
        ``(means, stds)``, each ``(K,)`` float64 on the CPU.
    """
    k = int(values.numel())
    uniform = torch.rand(k, generator=generator, dtype=torch.float64)
    if as_enum(config.mode, ContrastMode, "mode") is ContrastMode.T1:
        table, unknown = t1_means(values.cpu())
        jitter = torch.randn(k, generator=generator, dtype=torch.float64) * config.t1_jitter
        means = torch.where(unknown, uniform, (table + jitter).clamp(0, 1))
        means[values.cpu() == 0] = 0.0
    else:
        means = uniform
        if _uniform(generator) < config.background_zero:
            means[values.cpu() == 0] = 0.0
    stds = torch.rand(k, generator=generator, dtype=torch.float64) * config.noise_max
    stds[means == 0] = 0.0
    return means, stds


def _normalise(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def render_image(labels: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, config: SynthesisConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """Render one image ``(1, 1, *S)`` in ``[0, 1]`` from class indices ``(1, 1, *S)`` (module docstring, steps 2-3)."""
    device = labels.device
    shape = labels.shape[2:]
    d = len(shape)
    dgen = _device_generator(generator, device)
    idx = labels.long()
    image = means.to(device=device, dtype=torch.float32)[idx]
    noise = torch.randn(labels.shape, generator=dgen, device=device, dtype=torch.float32)
    image = image + stds.to(device=device, dtype=torch.float32)[idx] * noise
    sigma = _uniform(generator, 0.0, config.blur_max_vox)
    if sigma > 0.05:
        image = gaussian_blur(image, sigma)
    bias_std = _uniform(generator, 0.0, config.bias_max)
    coarse = torch.randn(1, 1, *([int(config.bias_points)] * d), generator=dgen, device=device) * bias_std
    image = image * torch.exp(_upsample(coarse, shape))
    image = _normalise(image)
    gamma = math.exp(float(torch.randn((), generator=generator, dtype=torch.float64)) * config.gamma_std)
    return _normalise(image.clamp_min(0) ** gamma)


def _strip(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    _, unknown = t1_means(values.cpu())
    drop = unknown.to(labels.device)[labels.long()]
    return torch.where(drop, torch.zeros_like(labels), labels)


def synthesize(labels: torch.Tensor, values: torch.Tensor, config: SynthesisConfig,
               generators: Sequence[torch.Generator], *, deform: bool = True,
               contrast: tuple[torch.Tensor, torch.Tensor] | None = None) -> SynthesizedImages:
    """Synthesise one image per label map (module docstring).

    Args:
        labels: ``(N, 1, *S)`` integer class indices (2D or 3D), on any device.
        values: ``(K,)`` FreeSurfer number of each class.
        config: :class:`SynthesisConfig`.
        generators: ``N`` CPU generators, one per item.
        deform: apply the random deformation (``False``: labels unchanged, zero displacement).
        contrast: ``(means, stds)`` of :func:`draw_contrast` to use for every item instead of a new draw.

    Returns:
        :class:`SynthesizedImages`.

    Raises:
        TypeError, ValueError: a floating label map, or a wrong number of generators.

    Shape:
        labels ``(N, 1, *S)`` -> image ``(N, 1, *S)``, labels ``(N, 1, *S)``, displacement ``(N, D, *S)``.
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim not in (4, 5) or labels.shape[1] != 1:
        raise TypeError(f"labels: expected an integer (N, 1, *S) class-index tensor, got {labels.dtype} {tuple(labels.shape)}")
    if len(generators) != labels.shape[0]:
        raise ValueError(f"generators: expected one per batch item ({labels.shape[0]}), got {len(generators)}")
    shape = tuple(labels.shape[2:])
    images, outs, disps = [], [], []
    for i, g in enumerate(generators):
        lab = labels[i : i + 1]
        if config.strip_prob > 0 and _uniform(g) < config.strip_prob:
            lab = _strip(lab, values)
        if deform:
            u = random_displacement(shape, config, g, device=labels.device)
            lab = warp_voxels(lab, u, interp="nearest")
        else:
            u = torch.zeros(1, len(shape), *shape, device=labels.device)
        means, stds = draw_contrast(values, config, g) if contrast is None else contrast
        images.append(render_image(lab, means, stds, config, g))
        outs.append(lab)
        disps.append(u)
    return SynthesizedImages(torch.cat(images), torch.cat(outs), torch.cat(disps))


def synthesize_pair(moving_source: torch.Tensor, fixed_source: torch.Tensor, values: torch.Tensor,
                    config: SynthesisConfig, generators: Sequence[torch.Generator]) -> SyntheticPair:
    """A batch of training pairs: moving and fixed images synthesised independently from their sources.

    For inter-subject pairs pass two different subjects' maps; for intra-subject pairs pass the same map
    twice (the two random deformations then make the pair). Each item's moving image is drawn first,
    then its fixed image, from the item's generator, so the two get independent deformations and (in
    ``random`` mode) independent contrasts; in ``t1`` mode both are T1-like.

    Args:
        moving_source, fixed_source: ``(N, 1, *S)`` class indices.
        values: ``(K,)`` FreeSurfer number of each class.
        config: :class:`SynthesisConfig`.
        generators: ``N`` CPU generators.

    Returns:
        :class:`SyntheticPair`.
    """
    if moving_source.shape != fixed_source.shape:
        raise ValueError(f"fixed_source: expected the shape of moving_source {tuple(moving_source.shape)}, got {tuple(fixed_source.shape)}")
    moving, fixed, mlab, flab = [], [], [], []
    # the T1 draw is made only when asked for, so that runs without it keep their random streams
    mixed = config.t1_fraction > 0 and config.mode == ContrastMode.RANDOM.value
    t1 = dataclasses.replace(config, mode=ContrastMode.T1.value) if mixed else config
    shared = config.shared_contrast_fraction > 0 and config.mode == ContrastMode.RANDOM.value
    for i, g in enumerate(generators):
        cfg = t1 if mixed and _uniform(g) < config.t1_fraction else config
        contrast = None
        if shared and cfg is config and _uniform(g) < config.shared_contrast_fraction:
            contrast = draw_contrast(values, cfg, g)
        m = synthesize(moving_source[i : i + 1], values, cfg, [g], contrast=contrast)
        f = synthesize(fixed_source[i : i + 1], values, cfg, [g], contrast=contrast)
        moving.append(m.image)
        fixed.append(f.image)
        mlab.append(m.labels)
        flab.append(f.labels)
    return SyntheticPair(torch.cat(moving), torch.cat(fixed), torch.cat(mlab), torch.cat(flab))

"""Training the MAD distance network from single-modality images (arXiv 2309.02875), and its validation.

Training pairs (:class:`MADPairSampler`): for each step, ``volumes_per_step`` training volumes are drawn;
each (normalised to its robust ``[0, 1]`` range, resampled to ``volume_spacing_mm``) gets two independent
random-convolution appearances (:func:`omnireg.training.randconv.random_convolution`, rescaled to the
robust ``[0, 1]`` range again; with probability ``original_fraction`` an appearance is the original
image). ``pairs_per_volume`` patch pairs are cut from them:

- centre ``c1``: a random foreground voxel (normalised intensity above ``foreground_level``), jittered;
- centre ``c2 = c1 + r u``: ``u`` uniform on the unit sphere (circle), ``r`` from a mixture: exactly 0 with
  probability ``zero_offset_fraction``, uniform in ``[0, small_offset_mm]`` with probability
  ``small_offset_fraction``, else uniform in ``[0, max_distance_mm]`` (beyond the patch size), so the
  accuracy near 0, which decides the registration's accuracy, gets many samples;
- both patches are ``patch_size^D`` grids of spacing ``patch_spacing_mm`` through a random frame
  ``R`` (rotation up to ``frame_rotation_deg`` about a random axis); the second patch's frame is further
  rotated by up to ``relative_rotation_deg`` (the warped moving patch of a misaligned transform is rotated
  too), patch 1 from appearance A, patch 2 from appearance B (linear interpolation, zeros outside);
- target: ``r`` in mm; loss: mean squared error (the paper's).

Validation (:func:`mad_validation`) predicts distances for seeded pairs at offsets 0 to
``max_distance_mm`` on held-out volumes (random-convolution appearances) and on real, aligned
multi-modal pairs (patch 1 from the fixed image, patch 2 from the moving image at the known offset),
and writes a JSON report and a plot next to the model file.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..core import Grid, Image, sample
from ..core.intensity import robust_normalize
from ..core.files import atomic_output, write_json_atomic
from ..networks.mad import MADConfig, MADNet
from ..networks.store import save_model, to_plain
from ..similarity.mad import patch_offsets_mm
from .loop import FitConfig, TrainEvent, fit
from .randconv import RandConvConfig, random_convolution

__all__ = [
    "MADTrainConfig",
    "MADPairSampler",
    "MADVolume",
    "load_mad_volume",
    "mad_loss",
    "mad_validation",
    "read_pairs_csv",
    "train_mad",
]

log = logging.getLogger(__name__)


@dataclass
class MADTrainConfig:
    """Everything that defines a MAD training run (network, data, optimisation).

    Attributes:
        network: the architecture and patch geometry (:class:`omnireg.networks.mad.MADConfig`: ndim,
            patch size and spacing, widths, ``max_distance_mm``, ...), saved with the weights.
        volume_spacing_mm: training volumes are resampled to this isotropic spacing (``None``:
            ``network.patch_spacing_mm``).
        foreground_level: patch centres lie where the normalised intensity exceeds this.
        zero_offset_fraction, small_offset_fraction, small_offset_mm: the offset distribution (module doc).
        frame_rotation_deg: largest rotation of the common patch frame.
        relative_rotation_deg: largest extra rotation of the second patch.
        original_fraction: probability that an appearance is the unmodified image.
        randconv: the random-convolution settings.
        appearance_reuse: consecutive steps sharing the same volumes and random-convolution appearances
            (new patch pairs every step): the appearances of step ``t`` are drawn from a generator
            seeded by ``(seed, t // appearance_reuse)``, so resumed runs stay exact; > 1 amortises the
            cost of random convolutions on 3D volumes.
        volumes_per_step, pairs_per_volume: batch layout (batch size = their product).
        fit: optimisation (:class:`~omnireg.training.loop.FitConfig`; here 1500 steps, lr 2e-3, weight
            decay 1e-4, 50 warm-up steps by default).
    """

    network: MADConfig = field(default_factory=MADConfig)
    volume_spacing_mm: float | None = None
    foreground_level: float = 0.1
    zero_offset_fraction: float = 0.1
    small_offset_fraction: float = 0.3
    small_offset_mm: float = 6.0
    frame_rotation_deg: float = 20.0
    relative_rotation_deg: float = 10.0
    original_fraction: float = 0.15
    randconv: RandConvConfig = field(default_factory=RandConvConfig)
    appearance_reuse: int = 1
    volumes_per_step: int = 1
    pairs_per_volume: int = 64
    fit: FitConfig = field(default_factory=lambda: FitConfig(steps=1500, lr=2e-3, weight_decay=1e-4, warmup=50))

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = MADConfig(**self.network)
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**self.fit)
        if isinstance(self.randconv, dict):
            self.randconv = RandConvConfig(**self.randconv)
        for name in ("zero_offset_fraction", "small_offset_fraction", "original_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        if self.zero_offset_fraction + self.small_offset_fraction > 1:
            raise ValueError("zero_offset_fraction + small_offset_fraction: expected <= 1")
        if int(self.appearance_reuse) < 1:
            raise ValueError(f"appearance_reuse: expected >= 1, got {self.appearance_reuse!r}")
        if int(self.volumes_per_step) < 1 or int(self.pairs_per_volume) < 1:
            raise ValueError("volumes_per_step, pairs_per_volume: expected >= 1")

    @property
    def spacing(self) -> float:
        """The isotropic spacing (mm) training volumes are resampled to."""
        return float(self.volume_spacing_mm or self.network.patch_spacing_mm)


# ------------------------------------------------------------------------------------------- volumes
@dataclass
class MADVolume:
    """A training or validation image: ``data`` ``(1, 1, *S)`` in its robust ``[0, 1]`` range on an isotropic
    ``grid`` (``spacing`` mm), and the flat indices of its foreground voxels."""

    data: torch.Tensor
    grid: Grid
    foreground: torch.Tensor
    name: str = ""

    def random_centres(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, D)`` **voxel** positions of random foreground voxels, jittered by up to half a voxel."""
        idx = self.foreground[torch.randint(self.foreground.numel(), (n,), generator=generator)]
        vox = torch.stack(torch.unravel_index(idx, self.grid.shape), dim=1).double()
        return vox + torch.rand(vox.shape, generator=generator, dtype=torch.float64) - 0.5


def load_mad_volume(source: str | Path | Image, *, spacing_mm: float, foreground_level: float = 0.1) -> MADVolume:
    """Read an image (path or :class:`Image`), normalise it and resample it to isotropic ``spacing_mm``.

    Raises:
        FileNotFoundError: missing file.
        ValueError: a multi-channel image, or one without foreground.
    """
    from ..io import load_image

    img = source if isinstance(source, Image) else load_image(Path(source))
    name = str(source) if not isinstance(source, Image) else "image"
    if img.channels != 1:
        raise ValueError(f"images: expected single-channel images, {name} has {img.channels} channels")
    data = robust_normalize(img.batch().float())
    grid = img.grid
    ext = np.asarray(grid.extent_mm())
    shape = tuple(max(1, int(round(e / spacing_mm))) for e in ext)
    # same centre and direction, isotropic spacing
    centre_vox = (np.asarray(grid.shape) - 1) / 2
    centre = grid.transform_points(centre_vox[None], "voxel", "world")[0]
    new_origin = np.asarray(centre) - grid.direction @ ((np.asarray(shape) - 1) / 2 * spacing_mm)
    new = Grid(shape, (spacing_mm,) * grid.ndim, tuple(new_origin), grid.direction)
    if any(s > spacing_mm * 1.01 for s in grid.spacing) or any(s < spacing_mm * 0.99 for s in grid.spacing):
        from ..core.filters import gaussian_blur

        sig = [max(0.0, (spacing_mm**2 - s**2)) ** 0.5 / 2.355 / s for s in grid.spacing]
        data = gaussian_blur(data, sig) if max(sig) > 0 else data
    pts = grid.transform_points(new.points("world", dtype=torch.float64), "world", "voxel").unsqueeze(0)
    data = sample(data, pts.float(), interp="linear", padding="zeros")
    fg = (data.reshape(-1) > foreground_level).nonzero().reshape(-1)
    if fg.numel() == 0:
        raise ValueError(f"images: {name} has no voxel above the foreground level {foreground_level}")
    return MADVolume(data, new, fg, name)


def read_pairs_csv(path: str | Path) -> list[tuple[str, str]]:
    """Aligned multi-modal pairs: a CSV with columns ``fixed,moving`` (header optional); relative paths are
    relative to the CSV's folder.

    Raises:
        FileNotFoundError: the CSV or a listed image is missing.
        ValueError: a row without two paths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"validation_pairs: no such file: {path}")
    out = []
    with path.open() as fh:
        for i, row in enumerate(csv.reader(fh)):
            row = [c.strip() for c in row if c.strip()]
            if not row or row[0].startswith("#") or (i == 0 and row[0].lower() == "fixed"):
                continue
            if len(row) != 2:
                raise ValueError(f"validation_pairs: {path} line {i + 1}: expected 'fixed,moving', got {row!r}")
            pair = []
            for p in row:
                q = Path(p) if Path(p).is_absolute() else path.parent / p
                if not q.is_file():
                    raise FileNotFoundError(f"validation_pairs: {path} line {i + 1}: no such file: {q}")
                pair.append(str(q))
            out.append((pair[0], pair[1]))
    return out


# ------------------------------------------------------------------------------------------- geometry
def _random_rotations(n: int, ndim: int, max_deg: float, generator: torch.Generator) -> torch.Tensor:
    """``(n, D, D)`` rotations by an angle uniform in ``[-max_deg, max_deg]`` about a random axis (3D)."""
    ang = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(max_deg)
    if ndim == 2:
        c, s = torch.cos(ang), torch.sin(ang)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    axis = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = torch.zeros(n, 3, 3, dtype=torch.float64)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    a = ang.reshape(n, 1, 1)
    return eye + torch.sin(a) * k + (1 - torch.cos(a)) * (k @ k)


def _random_offsets(n: int, ndim: int, cfg: MADTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n, D)`` offset vectors (mm) drawn from the mixture of the module docstring."""
    u = torch.randn(n, ndim, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    kind = torch.rand(n, generator=generator, dtype=torch.float64)
    t = torch.rand(n, generator=generator, dtype=torch.float64)
    r = torch.where(kind < cfg.small_offset_fraction, t * cfg.small_offset_mm, t * cfg.network.max_distance_mm)
    r = torch.where(kind > 1 - cfg.zero_offset_fraction, torch.zeros_like(r), r)
    return u * r[:, None]


def _cut_patches(data: torch.Tensor, spacing: float, centres_vox: torch.Tensor, frames: torch.Tensor,
                 offsets_mm: torch.Tensor) -> torch.Tensor:
    """Patches ``(n, 1, p, ..., p)`` of ``data`` ``(1, 1, *S)`` (isotropic ``spacing``) at voxel ``centres_vox``
    ``(n, D)`` through ``frames`` ``(n, D, D)``; ``offsets_mm`` from :func:`omnireg.similarity.mad.patch_offsets_mm`."""
    n, d = centres_vox.shape
    pts = torch.einsum("nij,...j->n...i", frames, offsets_mm) / spacing
    pts = pts + centres_vox.reshape(n, *([1] * d), d)
    out = sample(data.expand(n, *data.shape[1:]), pts.to(data.dtype), interp="linear", padding="zeros")
    return out


def _appearance(vol: MADVolume, cfg: MADTrainConfig, generator: torch.Generator) -> torch.Tensor:
    if float(torch.rand((), generator=generator)) < cfg.original_fraction:
        return vol.data
    y = random_convolution(vol.data, config=cfg.randconv, generator=generator)
    return robust_normalize(y)


class MADPairSampler:
    """``sampler(step, generator) -> (pairs (B, 2, *p), distances_mm (B,))``: the training batches (module doc)."""

    def __init__(self, volumes: Sequence[MADVolume], config: MADTrainConfig) -> None:
        if not volumes:
            raise ValueError("images: expected at least one training image")
        dims = {v.grid.ndim for v in volumes}
        if dims != {config.network.ndim}:
            raise ValueError(f"images: expected {config.network.ndim}D images (--ndim), got {sorted(dims)}D")
        self.volumes = list(volumes)
        self.config = config
        self.offsets = patch_offsets_mm(config.network.patch_size, config.network.patch_spacing_mm, config.network.ndim)
        self._cached: tuple[int, list] | None = None

    def pairs_from(self, vol: MADVolume, a: torch.Tensor, b: torch.Tensor, n: int, generator: torch.Generator,
                   *, offsets_mm: torch.Tensor | None = None, rotate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs: patch 1 from ``a`` at random centres, patch 2 from ``b`` at the offset centres."""
        cfg, d = self.config, self.config.network.ndim
        c1 = vol.random_centres(n, generator)
        off = _random_offsets(n, d, cfg, generator) if offsets_mm is None else offsets_mm
        if rotate:
            f1 = _random_rotations(n, d, cfg.frame_rotation_deg, generator)
            f2 = f1 @ _random_rotations(n, d, cfg.relative_rotation_deg, generator)
        else:
            f1 = f2 = torch.eye(d, dtype=torch.float64).expand(n, d, d)
        # world offset -> voxel offset of the isotropic grid: direction^T / spacing
        rot = torch.tensor(np.array(vol.grid.direction), dtype=torch.float64)
        c2 = c1 + off @ rot / vol.grid.spacing[0]
        f1v, f2v = rot.T @ f1, rot.T @ f2
        p1 = _cut_patches(a, vol.grid.spacing[0], c1, f1v, self.offsets)
        p2 = _cut_patches(b, vol.grid.spacing[0], c2, f2v, self.offsets)
        return torch.cat([p1, p2], dim=1), off.norm(dim=1).float()

    def appearances(self, block: int) -> list[tuple[MADVolume, torch.Tensor, torch.Tensor]]:
        """The volumes and appearance pairs of step block ``block`` (cached for consecutive steps)."""
        if self._cached is not None and self._cached[0] == block:
            return self._cached[1]
        cfg = self.config
        g = torch.Generator().manual_seed((int(cfg.fit.seed) * 1_000_033 + int(block) * 104_729 + 7) % (2**63 - 1))
        out = []
        for _ in range(cfg.volumes_per_step):
            vol = self.volumes[int(torch.randint(len(self.volumes), (1,), generator=g))]
            out.append((vol, _appearance(vol, cfg, g), _appearance(vol, cfg, g)))
        self._cached = (block, out)
        return out

    def __call__(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        pairs, dist = [], []
        for vol, a, b in self.appearances(int(step) // cfg.appearance_reuse):
            p, t = self.pairs_from(vol, a, b, cfg.pairs_per_volume, generator)
            pairs.append(p)
            dist.append(t)
        return torch.cat(pairs), torch.cat(dist)


def mad_loss(model: MADNet, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared error (mm^2) between predicted and true centre distances."""
    pairs, dist = batch
    return ((model(pairs) - dist) ** 2).mean()


# ------------------------------------------------------------------------------------------- validation
_VAL_DISTANCES = (0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)


@torch.no_grad()
def _predict(model: MADNet, pairs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    return torch.cat([model(pairs[i : i + chunk]) for i in range(0, pairs.shape[0], chunk)])


def _curve(true: torch.Tensor, pred: torch.Tensor) -> dict:
    rows = []
    for d in sorted(set(true.tolist())):
        sel = true == d
        p = pred[sel]
        rows.append({"true_mm": d, "pred_mean_mm": float(p.mean()), "pred_std_mm": float(p.std(unbiased=False)), "n": int(sel.sum())})
    means = [r["pred_mean_mm"] for r in rows]
    return {
        "curve": rows,
        "mae_mm": float((pred - true).abs().mean()),
        "identical_mean_mm": rows[0]["pred_mean_mm"] if rows and rows[0]["true_mm"] == 0 else None,
        "monotone": bool(all(b > a for a, b in zip(means, means[1:]))),
        "spearman": _spearman(true, pred),
    }


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def mad_validation(
    model: MADNet,
    *,
    volumes: Sequence[MADVolume] = (),
    pairs: Sequence[tuple[MADVolume, MADVolume]] = (),
    config: MADTrainConfig,
    per_distance: int = 24,
    appearances: int = 8,
    seed: int = 12345,
) -> dict:
    """Predicted vs true centre distance on held-out volumes (random convolutions) and aligned real pairs.

    For every distance in 0, 1, 2, 4, 8, 12, 16, 24, 32, 48 mm (up to ``max_distance_mm``), ``per_distance``
    pairs in random directions (no patch rotation: at alignment the registration compares unrotated
    patches) are predicted; for held-out volumes they are spread over ``appearances`` random-convolution
    appearance pairs.

    Returns:
        ``{"volumes": {name: summary}, "pairs": {name: summary}, "points": {...}}`` where a summary has the
        per-distance mean/std (``curve``), ``mae_mm``, ``identical_mean_mm`` (prediction at distance 0),
        ``monotone`` and ``spearman`` (rank correlation of prediction and truth).
    """
    model.eval()
    sampler = MADPairSampler([v for v in volumes] or [p[0] for p in pairs], config) if (volumes or pairs) else None
    report: dict = {"volumes": {}, "pairs": {}, "points": {}}
    dists = torch.tensor([d for d in _VAL_DISTANCES if d <= config.network.max_distance_mm], dtype=torch.float64)
    n = len(dists) * per_distance
    for kind, items in (("volumes", [(v, None) for v in volumes]), ("pairs", list(pairs))):
        for i, (a_vol, b_vol) in enumerate(items):
            g = torch.Generator().manual_seed(seed + i)
            u = torch.randn(n, config.network.ndim, generator=g, dtype=torch.float64)
            off = u / u.norm(dim=1, keepdim=True) * dists.repeat_interleave(per_distance)[:, None]
            if b_vol is None:
                name = Path(a_vol.name).name
                parts = torch.arange(n) % appearances
                batch = torch.empty(n, 2, *([config.network.patch_size] * config.network.ndim))
                true = torch.empty(n)
                for j in range(appearances):
                    sel = (parts == j).nonzero().reshape(-1)
                    a = robust_normalize(random_convolution(a_vol.data, config=config.randconv, generator=g))
                    b = robust_normalize(random_convolution(a_vol.data, config=config.randconv, generator=g))
                    batch[sel], true[sel] = sampler.pairs_from(a_vol, a, b, sel.numel(), g, offsets_mm=off[sel], rotate=False)
            else:
                a, b = a_vol.data, b_vol.data
                name = f"{Path(a_vol.name).name}->{Path(b_vol.name).name}"
                batch, true = sampler.pairs_from(a_vol, a, b, n, g, offsets_mm=off, rotate=False)
            pred = _predict(model, batch)
            report[kind][name] = _curve(true, pred)
            report["points"][f"{kind}:{name}"] = {"true": true.tolist(), "pred": pred.tolist()}
    return report


def plot_validation(report: dict, path: str | Path) -> Path | None:
    """Scatter of predicted vs true distance per validation item (PNG); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - optional dependency
        log.warning("matplotlib is not installed: no validation plot")
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    hi = 0.0
    for key, pts in report["points"].items():
        t, p = np.asarray(pts["true"]), np.asarray(pts["pred"])
        jitter = (np.random.default_rng(0).random(t.shape) - 0.5) * 0.6
        ax.scatter(t + jitter, p, s=4, alpha=0.35, label=key)
        hi = max(hi, float(t.max()), float(p.max()))
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="ideal")
    ax.set_xlabel("true distance between patch centres (mm)")
    ax.set_ylabel("predicted distance (mm)")
    ax.set_title("MAD validation (held-out data)")
    ax.legend(fontsize=6, markerscale=3)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- training
def train_mad(
    images: Sequence[str | Path],
    out: str | Path,
    *,
    config: MADTrainConfig | None = None,
    resume: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
    validation_images: Sequence[str | Path] = (),
    validation_pairs: Sequence[tuple[str | Path, str | Path]] = (),
    meta: dict | None = None,
) -> dict:
    """Train a MAD network on single-modality ``images`` and save it (with its validation) to ``out``.

    Writes ``out`` (the model file, :func:`omnireg.networks.store.save_model`), ``out + ".ckpt"``
    (checkpoints, removed at the end), ``<stem>.validation.json`` and ``<stem>.validation.png`` next to it.

    Args:
        images: single-modality training images (2D or 3D as ``config.network.ndim``).
        out: the model file to write.
        config: a :class:`MADTrainConfig`.
        resume: continue from ``out + ".ckpt"`` if it exists.
        progress: called after every step with a :class:`~omnireg.training.loop.TrainEvent`.
        validation_images: held-out single-modality images (random-convolution pairs).
        validation_pairs: held-out aligned ``(fixed, moving)`` images of two real modalities.
        meta: extra provenance stored in the model file (e.g. the command line).

    Returns:
        The validation report (also stored in the model's ``meta["validation"]``).

    Raises:
        FileNotFoundError, ValueError: missing or unusable images, dimension mismatch.
    """
    cfg = config or MADTrainConfig()
    if not images:
        raise ValueError("images: expected at least one training image")
    out = Path(out)
    t0 = time.perf_counter()
    load = lambda p: load_mad_volume(p, spacing_mm=cfg.spacing, foreground_level=cfg.foreground_level)  # noqa: E731
    volumes = [load(p) for p in images]
    val_volumes = [load(p) for p in validation_images]
    val_pairs = [(load(a), load(b)) for a, b in validation_pairs]
    for v in val_volumes + [x for p in val_pairs for x in p]:
        if v.grid.ndim != cfg.network.ndim:
            raise ValueError(f"validation: {v.name} is {v.grid.ndim}D, expected {cfg.network.ndim}D")
    log.info("loaded %d training volumes in %.1f s", len(volumes), time.perf_counter() - t0)
    sampler = MADPairSampler(volumes, cfg)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global state
        torch.manual_seed(cfg.fit.seed)
        model = MADNet(cfg.network)
    extra = {"config": to_plain(dataclasses.asdict(cfg)), "images": [str(p) for p in images]}
    ckpt = out.with_name(out.name + ".ckpt")
    result = fit(model, sampler, mad_loss, cfg.fit, checkpoint=ckpt, resume=resume, extra_state=extra, progress=progress)
    report = mad_validation(model, volumes=val_volumes, pairs=val_pairs, config=cfg)
    stem = out.with_suffix("")
    summary = {k: v for k, v in report.items() if k != "points"}
    losses = result.losses
    summary["training"] = {
        "steps": cfg.fit.steps,
        "resumed_from": result.resumed_from,
        "runtime_s": round(result.runtime_s, 1),
        "final_loss_mean_last_100": float(np.mean(losses[-100:])) if losses else None,
        "threads": torch.get_num_threads(),
    }
    json_path = stem.with_name(stem.name + ".validation.json")
    write_json_atomic(json_path, {**summary, "points": report["points"]}, force=True, indent=1)
    plot_validation(report, stem.with_name(stem.name + ".validation.png"))
    file_meta = {
        **(meta or {}),
        "train_config": to_plain(dataclasses.asdict(cfg)),
        "images": [str(p) for p in images],
        "validation_images": [str(p) for p in validation_images],
        "validation_pairs": [[str(a), str(b)] for a, b in validation_pairs],
        "validation": summary,
    }
    save_model(out, model, kind="mad", meta=file_meta)
    ckpt.unlink(missing_ok=True)
    log.info("saved %s (%.1f s)", out, time.perf_counter() - t0)
    return summary

"""Fixtures for the report tests: tiny synthetic 3D and 2D registrations and a headless Chromium driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.optim import LevelHistory, RegistrationResult
from omnireg.transforms import Affine, DisplacementField, compose, resample

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def blobs(grid: Grid, centres, radii) -> torch.Tensor:
    """Sum of Gaussian blobs at world centres (mm) with radii (mm), ``(1, *S)`` float32."""
    x = grid.points("world", dtype=torch.float64)
    out = torch.zeros(grid.shape, dtype=torch.float64)
    for c, r in zip(centres, radii):
        out += torch.exp(-((x - torch.tensor(c, dtype=torch.float64)) ** 2).sum(-1) / (2.0 * r * r))
    return out.float()[None]


def _history(stages: list[tuple[str, str]]) -> list[LevelHistory]:
    out = []
    for s, (kind, metric) in enumerate(stages):
        for level, shrink in enumerate((2.0, 1.0)):
            losses = [1.0 / (1 + 0.3 * i + level + s) for i in range(6 - 2 * level)]
            out.append(LevelHistory(s, level, kind, metric, shrink, losses, True, 0.1))
    return out


@pytest.fixture(scope="session")
def case3d() -> types.SimpleNamespace:
    """24^3 blobs; moving on another grid; an affine and a smooth displacement (no folding); labels."""
    g = Grid((24, 24, 24), spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0))
    fixed = Image(blobs(g, [(0, 0, 0), (8, 6, -4), (-8, -4, 6)], [7, 3, 3]), g)
    mg = Grid((20, 22, 24), spacing=(2.4, 2.2, 2.0), origin=(-22.0, -22.0, -20.0))
    moving = Image(blobs(mg, [(2, 1, 0), (10, 7, -4), (-6, -3, 6)], [7, 3, 3]), mg)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 3] = torch.tensor([2.0, 1.0, 0.0])
    linear = Affine.from_matrix(m)
    x = g.points("world")
    u = torch.zeros(1, 3, *g.shape)
    u[0, 0] = 1.5 * torch.sin(x[..., 1] / 6.0)
    u[0, 1] = 1.5 * torch.cos(x[..., 0] / 6.0)
    field = DisplacementField(u, g)
    total = compose(linear.to(torch.float32), field)
    warped = resample(moving, total, onto=g)
    result = RegistrationResult(
        transform=total,
        linear=linear,
        deformable=field,
        warped=warped,
        history=_history([("affine", "ncc"), ("bspline", "lncc")]),
        metric_before={"lncc": 0.41},
        metric_after={"lncc": 0.93},
        runtime_s=3.5,
        stage_runtimes_s=[1.25, 2.25],
        config={"stages": [{"transform": "affine"}, {"transform": "bspline"}], "seed": 0},
    )
    fixed_labels = Image((fixed.data > 0.5).to(torch.int32), g)
    warped_labels = Image((warped.data > 0.5).to(torch.int32), g)
    return types.SimpleNamespace(
        fixed=fixed, moving=moving, result=result, fixed_labels=fixed_labels, warped_labels=warped_labels
    )


@pytest.fixture(scope="session")
def case2d() -> types.SimpleNamespace:
    """A 32 x 28 2D case on an ITK-like (LPS) grid with an affine-only result (no deformable part)."""
    g = Grid((32, 28), spacing=(1.5, 1.5), origin=(20.0, 18.0), direction=np.diag([-1.0, -1.0]))
    fixed = Image(blobs(g, [(0, 0), (6, 5)], [6, 2.5]), g)
    moving = Image(blobs(g, [(2, -1), (8, 4)], [6, 2.5]), g)
    m = torch.eye(3, dtype=torch.float64)
    m[:2, 2] = torch.tensor([2.0, -1.0])
    linear = Affine.from_matrix(m)
    result = RegistrationResult(
        transform=linear,
        linear=linear,
        deformable=None,
        warped=resample(moving, linear, onto=g),
        history=_history([("affine", "mse")]),
        metric_before={"mse": -0.02},
        metric_after={"mse": -0.001},
        runtime_s=0.5,
        stage_runtimes_s=[0.5],
        config={},
    )
    return types.SimpleNamespace(fixed=fixed, moving=moving, result=result)


class _ImgCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "body":
            self.body = dict(attrs)


def _parse_images(text: str) -> tuple[list[dict], dict]:
    collector = _ImgCollector()
    collector.feed(text)
    return collector.images, collector.body


@pytest.fixture
def parse_images():
    """A function ``parse(html_text) -> (img attribute dicts, body attribute dict)``."""
    return _parse_images


@pytest.fixture
def chromium(tmp_path):
    """A function ``dom(html_path) -> str``: the DOM of a local page after load, from headless Chromium.

    Skips the test when no Chromium binary is installed (CI installs the Debian package ``chromium``).
    The browser runs offline-minded: no QUIC, no background networking, no component updates, a fresh
    profile in the test's temporary folder.
    """
    binary = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install -y chromium)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}

    def dom(page: Path) -> str:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            Path(page).resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode != 0 or "<html" not in proc.stdout:
            raise AssertionError(f"chromium failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return proc.stdout

    return dom

"""``omnireg register --inverse`` writes inverse.h5 and inverse_warped.nii.gz (the fixed image on the moving
grid); ``omnireg apply --inverse`` reproduces it; landmarks move with transform.h5 one way, inverse.h5 the other."""

import json

import numpy as np
import SimpleITK as sitk
import torch

from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.core.filters import gaussian_blur
from omnireg.io import load_image, save_image
from omnireg.transforms import Translation, resample
from omnireg.transforms.files import load_transform

SHIFT = np.array([3.0, -2.0, 1.5])  # the moving image shows the fixed content at x + SHIFT


def _pair(tmp_path):
    """A fixed image and a moving image on ANOTHER grid (spacing, origin, shape) with its content shifted."""
    g = Grid((28, 30, 26), spacing=(2.0, 2.0, 2.5), origin=(-27.0, -29.0, -31.0))
    x = torch.zeros(1, *g.shape)
    x[0, 8:20, 9:22, 6:19] = 1.0
    x[0, 12:16, 12:16, 9:14] = 2.0
    fixed = Image(gaussian_blur(x[None], 1.2)[0], g)
    mg = Grid((24, 26, 24), spacing=(2.3, 2.2, 2.6), origin=(-25.0, -30.0, -28.0))
    moving = resample(fixed, Translation(ndim=3, translation=torch.tensor(-SHIFT, dtype=torch.float32)), onto=mg)
    fp, mp = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    save_image(fixed, fp)
    save_image(Image(moving.data.detach(), mg), mp)
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("init: geometry\nstages:\n  - transform: rigid\n    metric: ncc\n    shrink: [2, 1]\n    iterations: [30, 20]\n")
    return fp, mp, cfg


def test_register_inverse_writes_inverse_files_and_apply_inverse_reproduces_them(tmp_path):
    fp, mp, cfg = _pair(tmp_path)
    out = tmp_path / "out"
    args = ["register", str(fp), str(mp), "--out", str(out), "--config", str(cfg), "--no-progress", "--no-report"]
    assert main([*args, "--inverse"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["outputs"]["inverse"] == "inverse.h5" and result["outputs"]["inverse_warped"] == "inverse_warped.nii.gz"
    residual = result["inverse_residual_mm"]
    assert residual["method"] == "matrix inverse" and residual["points"] > 0 and residual["max"] < 1e-3
    inverse_warped = load_image(out / "inverse_warped.nii.gz")
    moving = load_image(mp)
    assert inverse_warped.grid.same_as(moving.grid, atol=1e-4)
    # the fixed image pulled onto the moving grid looks like the moving image (the registration found SHIFT)
    inner = (slice(None),) + (slice(3, -3),) * 3
    assert float((inverse_warped.data - moving.data)[inner].abs().mean()) < 0.1 * float(moving.data[inner].abs().mean())
    # apply --inverse with transform.h5 of the result folder uses inverse.h5 and gives the same image
    applied = tmp_path / "applied.nii.gz"
    assert main(["apply", "--moving", str(fp), "--reference", str(mp), "--transform", str(out / "transform.h5"),
                 "--inverse", "--out", str(applied)]) == 0
    torch.testing.assert_close(load_image(applied).data, inverse_warped.data, atol=1e-5, rtol=0)
    # ... and so does inverting the chain item by item (a linear chain: the matrix inverse)
    chain = tmp_path / "chain.nii.gz"
    assert main(["apply", "--moving", str(fp), "--reference", str(mp), "--transform", str(out / "linear.mat"),
                 "--inverse", "--out", str(chain)]) == 0
    torch.testing.assert_close(load_image(chain).data, inverse_warped.data, atol=1e-4, rtol=0)
    # points: transform.h5 moves fixed-space points into the moving image, inverse.h5 moves them back
    p_fixed = torch.tensor([[[1.0, 2.0, 3.0], [-5.0, 4.0, 0.5]]], dtype=torch.float64)
    forward, inverse = load_transform(out / "transform.h5"), load_transform(out / "inverse.h5")
    q_moving = forward(p_fixed)
    np.testing.assert_allclose((q_moving - p_fixed)[0].numpy(), np.tile(SHIFT, (2, 1)), atol=0.3)
    torch.testing.assert_close(inverse(q_moving), p_fixed, atol=1e-4, rtol=0)
    itk_inverse = sitk.ReadTransform(str(out / "inverse.h5"))
    flip = np.array([-1.0, -1.0, 1.0])
    back = np.array([itk_inverse.TransformPoint(tuple(flip * q)) for q in q_moving[0].numpy()]) * flip
    np.testing.assert_allclose(back, p_fixed[0].numpy(), atol=1e-4)


def test_register_without_inverse_writes_no_inverse_and_apply_inverse_inverts_the_chain(tmp_path):
    fp, mp, cfg = _pair(tmp_path)
    out = tmp_path / "out"
    assert main(["register", str(fp), str(mp), "--out", str(out), "--config", str(cfg), "--no-progress", "--no-report"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert "inverse" not in result["outputs"] and "inverse_residual_mm" not in result
    assert not (out / "inverse.h5").exists() and not (out / "inverse_warped.nii.gz").exists()
    # a stale inverse.h5 (not listed in result.json) is not used: the chain is inverted instead
    (out / "inverse.h5").write_bytes(b"not a transform")
    applied = tmp_path / "applied.nii.gz"
    assert main(["apply", "--moving", str(fp), "--reference", str(mp), "--transform", str(out / "transform.h5"),
                 "--inverse", "--out", str(applied)]) == 0
    direct = tmp_path / "direct.nii.gz"
    assert main(["apply", "--moving", str(fp), "--reference", str(mp), "--transform", f"[{out / 'linear.mat'},1]",
                 "--out", str(direct)]) == 0
    torch.testing.assert_close(load_image(applied).data, load_image(direct).data, atol=1e-5, rtol=0)

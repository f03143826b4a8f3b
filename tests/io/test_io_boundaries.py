"""omnireg.io depends only on omnireg.core, and real files from ../shared/data read consistently."""

from __future__ import annotations

import ast
from pathlib import Path

import nibabel as nib
import numpy as np

import omnireg.io
from omnireg.io import load_image
from omnireg.io.images import read_with_sitk

IO_DIR = Path(omnireg.io.__file__).parent


def _omnireg_imports(path: Path) -> set[str]:
    """Subpackages of omnireg imported by a module of omnireg.io (relative or absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 2:  # from ..core import X / from .. import core
                found.add(node.module.split(".")[0] if node.module else "(package)")
            elif node.level == 0 and node.module and node.module.startswith("omnireg"):
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "(package)")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("omnireg"):
                    parts = alias.name.split(".")
                    found.add(parts[1] if len(parts) > 1 else "(package)")
    return found


def test_io_imports_only_core():
    modules = sorted(IO_DIR.glob("*.py"))
    assert len(modules) >= 4
    for module in modules:
        assert _omnireg_imports(module) <= {"core"}, module.name


def test_shared_nifti_files_read_like_nibabel_and_simpleitk(shared_data):
    for name in ("spm12_templates_2mm/canonical_avg152T1.nii.gz", "itk_brain_2d_slices/BrainT1Slice.nii.gz"):
        path = shared_data / name
        if not path.exists():
            continue
        img = load_image(path)
        affine = nib.load(path).affine
        d = img.ndim
        expected = np.eye(d + 1)
        expected[:d, :d], expected[:d, d] = affine[:d, :d], affine[:d, 3]
        np.testing.assert_allclose(img.grid.world_from_voxel(), expected, atol=1e-5)
        nii = nib.load(path)
        scaled = (nii.dataobj.slope, nii.dataobj.inter) != (1.0, 0.0)
        assert img.data.dtype.is_floating_point == scaled  # unscaled uint8 files stay integer
        via_itk = read_with_sitk(path)
        assert via_itk.grid.same_as(img.grid, atol=1e-4), (via_itk.grid, img.grid)
        np.testing.assert_allclose(via_itk.data.double().numpy(), img.data.double().numpy(), rtol=1e-6)

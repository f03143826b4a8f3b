"""The HTML quality-control report: pictures present and loadable offline, tables, determinism, overwrites."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from omnireg.core import Image
from omnireg.evaluation import jacobian_determinant
from omnireg.optim import RegistrationResult
from omnireg.report import write_report, write_triplet
from omnireg.report.page import FILES_DIR, PICTURE_NAMES, REPORT_NAME
from omnireg.transforms import DisplacementField, compose

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report3d(case3d, tmp_path_factory):
    out = tmp_path_factory.mktemp("report3d")
    page = write_report(
        out,
        fixed=case3d.fixed,
        moving=case3d.moving,
        result=case3d.result,
        fixed_labels=case3d.fixed_labels,
        warped_labels=case3d.warped_labels,
        metrics={"dice_mean": 0.87, "tre": {"tre_mean_mm": 1.25, "tre_max_mm": 3.5}},
        title="blobs <3D>",
    )
    return page


@pytest.fixture(scope="module")
def report2d(case2d, tmp_path_factory):
    out = tmp_path_factory.mktemp("report2d")
    return write_report(out, fixed=case2d.fixed, moving=case2d.moving, result=case2d.result)


def _img_sources(text: str) -> list[str]:
    return re.findall(r"<img[^>]*\ssrc=\"([^\"]+)\"", text)


# ------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("which", ["report3d", "report2d"])
def test_every_img_src_is_a_relative_non_empty_png(which, request):
    page = request.getfixturevalue(which)
    assert page.name == REPORT_NAME
    text = page.read_text(encoding="utf-8")
    sources = _img_sources(text)
    expected = set(PICTURE_NAMES) if which == "report3d" else set(PICTURE_NAMES) - {"labels"}
    assert {s.split("/")[-1][:-4] for s in sources} == expected
    for src in sources:
        assert not src.startswith(("/", "file:")) and ":" not in src, src
        path = page.parent / src
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), src
    # nothing else is written beside the page
    assert sorted(p.name for p in page.parent.iterdir()) == sorted([REPORT_NAME, FILES_DIR])


@pytest.mark.parametrize("which", ["report3d", "report2d"])
def test_page_needs_no_network(which, request):
    text = request.getfixturevalue(which).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']//""", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "<script src" not in text


def test_pictures_are_small(report3d):
    total = sum(p.stat().st_size for p in (report3d.parent / FILES_DIR).glob("*.png"))
    assert total < 600_000


def test_page_states_the_display_convention_and_tables(report3d):
    text = report3d.read_text(encoding="utf-8")
    assert "Radiological convention: the patient&#x27;s right is on the left" in text
    assert "<title>blobs &lt;3D&gt;</title>" in text  # escaped
    # similarity before / after, stages with runtimes, extra metrics
    assert re.search(r"<td>lncc</td><td class=\"num\">0.41</td><td class=\"num\">0.93</td>", text)
    assert "<td class=\"num\">1.25</td></tr>" in text and "<td class=\"num\">2.25</td></tr>" in text
    assert "<td>total</td>" in text and "<td class=\"num\">3.5</td>" in text
    assert "<td>dice_mean</td><td class=\"num\">0.87</td>" in text
    assert "<caption>tre</caption>" in text and "<td>tre_max_mm</td><td class=\"num\">3.5</td>" in text
    assert "<summary>Configuration</summary>" in text


def test_jacobian_caption_counts_the_folded_voxels(case2d, tmp_path):
    g = case2d.fixed.grid
    u = torch.zeros(1, 2, *g.shape)
    u[0, 0, 10:14] = torch.linspace(6.0, -6.0, 4)[:, None]  # compresses past zero: det J < 0
    field = DisplacementField(u, g)
    total = compose(case2d.result.linear.to(torch.float32), field)
    res = RegistrationResult(**{**case2d.result.__dict__, "deformable": field, "transform": total})
    expected = int((jacobian_determinant(total, g) <= 0).sum())
    assert expected > 0
    text = write_report(tmp_path, fixed=case2d.fixed, moving=case2d.moving, result=res).read_text(encoding="utf-8")
    assert f"folding (det J &lt;= 0, yellow): {expected} voxels" in text
    assert "Deformation grid of the deformable part" in text


def test_metrics_from_the_evaluation_report_become_tables(case2d, tmp_path):
    metrics = {
        "labels": {
            "1": {"name": "blob", "dice": 0.9, "hd95_mm": 1.5},
            "2": {"name": "<small>", "dice": 0.7, "hd95_mm": 2.0},
        },
        "landmarks": {"set": {"tre_mean_mm": 1.0, "tre_per_point_mm": list(range(20))}},
    }
    text = write_report(tmp_path, fixed=case2d.fixed, moving=case2d.moving, result=case2d.result,
                        metrics=metrics).read_text(encoding="utf-8")
    assert "<th>labels</th><th>name</th><th>dice</th><th>hd95_mm</th>" in text
    assert "<td>2</td><td>&lt;small&gt;</td><td class=\"num\">0.7</td>" in text
    assert "<td>20 values</td>" in text


# ------------------------------------------------------------------------------------- the browser
@pytest.mark.parametrize("which", ["report3d", "report2d"])
def test_every_image_loads_in_headless_chromium(which, request, chromium, parse_images):
    page = request.getfixturevalue(which)
    images, body = parse_images(chromium(page))
    assert images and body.get("data-images-checked") == str(len(images))
    for img in images:
        assert img.get("data-loaded") == "true", img
        assert int(img["data-natural-width"]) > 0, img


def test_chromium_check_detects_a_missing_picture(report2d, tmp_path, chromium, parse_images):
    copy = tmp_path / "copy"
    shutil.copytree(report2d.parent, copy)
    (copy / FILES_DIR / "overlay.png").unlink()
    images, _ = parse_images(chromium(copy / REPORT_NAME))
    loaded = {img["src"].split("/")[-1]: img.get("data-loaded") for img in images}
    assert loaded.pop("overlay.png") == "false"
    assert set(loaded.values()) == {"true"}


# ------------------------------------------------------------------------------------- files
def test_same_input_gives_the_same_bytes(case2d, report2d, tmp_path):
    again = write_report(tmp_path, fixed=case2d.fixed, moving=case2d.moving, result=case2d.result)
    assert again.read_bytes() == report2d.read_bytes()
    for name in sorted(p.name for p in (report2d.parent / FILES_DIR).iterdir()):
        assert (tmp_path / FILES_DIR / name).read_bytes() == (report2d.parent / FILES_DIR / name).read_bytes(), name


def test_existing_report_needs_force_and_stale_pictures_go(case2d, tmp_path):
    kw = dict(fixed=case2d.fixed, moving=case2d.moving, result=case2d.result)
    labels = Image((case2d.fixed.data > 0.5).to(torch.int32), case2d.fixed.grid)
    write_report(tmp_path, fixed_labels=labels, warped_labels=labels, **kw)
    assert (tmp_path / FILES_DIR / "labels.png").is_file()
    with pytest.raises(FileExistsError, match="out_dir: .*report.html.*force=True"):
        write_report(tmp_path, **kw)
    write_report(tmp_path, force=True, **kw)
    assert not (tmp_path / FILES_DIR / "labels.png").exists()
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_triplet_png_for_3d_and_2d(case3d, case2d, tmp_path):
    p3 = write_triplet(tmp_path / "t3.png", fixed=case3d.fixed, moving=case3d.moving, warped=case3d.result.warped)
    p2 = write_triplet(tmp_path / "t2.png", fixed=case2d.fixed, moving=case2d.moving, warped=case2d.result.warped)
    for p in (p3, p2):
        assert p.read_bytes().startswith(PNG_SIGNATURE)
    images = dict(fixed=case3d.fixed, moving=case3d.moving, warped=case3d.result.warped)
    with pytest.raises(FileExistsError, match="path: .*force=True"):
        write_triplet(p3, **images)
    write_triplet(p3, plane="sagittal", force=True, **images)
    with pytest.raises(ValueError, match="plane: expected one of"):
        write_triplet(tmp_path / "x.png", plane="oblique", **images)
    with pytest.raises(ValueError, match="path: expected a file name ending in .png"):
        write_triplet(tmp_path / "x.jpg", **images)


def test_errors_name_the_argument(case3d, case2d, tmp_path):
    kw = dict(fixed=case3d.fixed, moving=case3d.moving, result=case3d.result)
    with pytest.raises(TypeError, match="fixed: expected an Image"):
        write_report(tmp_path, **{**kw, "fixed": case3d.fixed.data})
    with pytest.raises(ValueError, match="moving: expected a 3D image like fixed, got 2D"):
        write_report(tmp_path, **{**kw, "moving": case2d.moving})
    with pytest.raises(TypeError, match="result: expected a RegistrationResult"):
        write_report(tmp_path, **{**kw, "result": {}})
    with pytest.raises(TypeError, match="metrics: expected a mapping"):
        write_report(tmp_path, metrics=[1, 2], **kw)
    with pytest.raises(ValueError, match="convention: expected one of 'radiological', 'neurological'"):
        write_report(tmp_path, convention="upside-down", **kw)
    with pytest.raises(TypeError, match="fixed_labels: expected an Image or None"):
        write_report(tmp_path, fixed_labels=np.zeros(3), **kw)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="out_dir: "):
        write_report(tmp_path / "file", **kw)
    assert not (tmp_path / REPORT_NAME).exists()


def test_multichannel_and_integer_images_are_shown(case2d, tmp_path):
    rgb = Image(case2d.fixed.data.expand(3, *case2d.fixed.grid.shape).contiguous(), case2d.fixed.grid)
    ints = Image((case2d.moving.data * 100).to(torch.int16), case2d.moving.grid)
    page = write_report(tmp_path, fixed=rgb, moving=ints, result=case2d.result)
    assert (page.parent / FILES_DIR / "views.png").stat().st_size > 1000

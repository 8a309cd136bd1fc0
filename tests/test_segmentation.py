import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import io, measure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.images import resolve, synthetic_cells
from slm.errors import InputError
from slm.estimators import StraightThrough
from slm.io import load_image, load_mask
from slm.models import PixelField
from slm.tasks import segmentation
from slm.tasks.segmentation import segmentation_loss, window_sum
from slm.train import train
from tests.conftest import run_cli


def save(path, array):
    Image.fromarray(array).save(path)
    return path


def test_pixel_field_mask_is_hard_forward_and_identity_backward():
    field = PixelField(torch.tensor([[0.1, 0.5, 0.9]]), estimator=StraightThrough())
    m = field.mask()
    assert m.tolist() == [[0.0, 0.0, 1.0]]
    (m * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert field.field.grad.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(InputError, match="estimator: the pixel field is deterministic"):
        PixelField(estimator="score")


def test_straight_through_gradient_equals_the_exact_flip_cost(monkeypatch):
    """Every term is linear in each pixel, so dL/dm_i is the change of L when pixel i flips (class means held)."""
    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(12, 12, generator=gen, dtype=torch.float64) - 0.5
    mask = (torch.rand(12, 12, generator=gen) < 0.4).double()
    lambdas = (0.3, 0.2, 0.1, 1.0)
    for window, level in ((None, 0.5), (3, 0.5), (3, 0.65)):
        m = mask.clone().requires_grad_(True)
        segmentation_loss(m, reference, lambdas, window, level).backward()
        means = segmentation.class_means(reference, mask, window)
        monkeypatch.setattr(segmentation, "class_means", lambda *args, means=means: means)
        for i, j in ((5, 7), (0, 0), (11, 3)):
            flipped = mask.clone()
            flipped[i, j] = 1 - flipped[i, j]
            delta = (segmentation_loss(flipped, reference, lambdas, window, level)
                     - segmentation_loss(mask, reference, lambdas, window, level))
            sign = 1 if mask[i, j] == 0 else -1
            assert m.grad[i, j].item() == pytest.approx(sign * delta.item(), rel=1e-6)
        monkeypatch.undo()


def test_window_sum_matches_a_box_convolution():
    x = torch.rand(9, 11)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x[None, None], (2, 2, 2, 2)), torch.ones(1, 1, 5, 5))
    torch.testing.assert_close(window_sum(x, 2), expected[0, 0])


@pytest.mark.parametrize("kind", ["gray8", "gray16", "rgb", "rgba"])
def test_images_of_every_kind_load_to_unit_gray(tmp_path, kind):
    base = (np.arange(20 * 30).reshape(20, 30) % 200).astype(np.uint8)
    arrays = {"gray8": base, "gray16": base.astype(np.uint16) * 300, "rgb": np.stack([base] * 3, -1),
              "rgba": np.concatenate([np.stack([base] * 3, -1), np.full((20, 30, 1), 255, np.uint8)], -1)}
    path = tmp_path / ("im.tif" if kind == "gray16" else "im.png")
    save(path, arrays[kind])
    image = load_image(path)
    assert image.shape == (20, 30) and image.min() == 0 and image.max() == pytest.approx(1)


def test_mask_binarised_at_half_its_maximum(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 255
    mask[6, 6] = 127
    mask[7, 7] = 128
    loaded = load_mask(save(tmp_path / "m.png", mask), (10, 10))
    assert loaded.sum() == 9 + 1 and loaded[7, 7] and not loaded[6, 6]


@pytest.mark.parametrize(
    ("make", "key", "message"),
    [
        (lambda p: p / "missing.png", "data.path", "file not found"),
        (lambda p: (p / "bad.png").write_bytes(b"\x89PNG broken") and p / "bad.png", "data.path", "cannot read"),
        (lambda p: save(p / "flat.png", np.full((8, 8), 7, np.uint8)), "data.path", "is constant"),
    ],
)
def test_bad_images(tmp_path, make, key, message):
    with pytest.raises(InputError, match=f"{key}: .*{message}"):
        load_image(make(tmp_path))


def test_mask_of_another_size(tmp_path):
    with pytest.raises(InputError, match=r"data.mask_path: .* has size 5x4 but the image is 8x6"):
        load_mask(save(tmp_path / "m.png", np.zeros((4, 5), np.uint8)), (6, 8))


def test_bbbc005_layout_shares_the_f1_mask_across_blur_levels(tmp_path):
    images, truth = tmp_path / "images", tmp_path / "truth"
    images.mkdir()
    truth.mkdir()
    for name in ("SIMCEPImages_A05_C18_F1_s07_w1.TIF", "SIMCEPImages_K05_C18_F31_s07_w1.TIF",
                 "SIMCEPImages_K06_C22_F31_s07_w1.TIF"):
        save(images / name, np.zeros((4, 4), np.uint8))
    save(truth / "SIMCEPImages_A05_C18_F1_s07_w1.TIF", np.zeros((4, 4), np.uint8))
    image, mask = resolve(str(images), str(truth), "SIMCEPImages_K05_C18_F31_s07_w1")
    assert mask.name == "SIMCEPImages_A05_C18_F1_s07_w1.TIF" and image.name.startswith("SIMCEPImages_K05")
    with pytest.raises(InputError, match="data.mask_path: no F1 mask for SIMCEPImages_K06"):
        resolve(str(images), str(truth), "SIMCEPImages_K06_C22_F31_s07_w1.TIF")


def test_dis5k_layout(tmp_path):
    split = tmp_path / "DIS-VD"
    (split / "im").mkdir(parents=True)
    (split / "gt").mkdir()
    save(split / "im" / "1#Animal#seadragon.jpg", np.zeros((6, 6, 3), np.uint8))
    save(split / "gt" / "1#Animal#seadragon.png", np.zeros((6, 6), np.uint8))
    save(split / "im" / "2#Other#x.jpg", np.zeros((6, 6, 3), np.uint8))
    image, mask = resolve(str(split), None, None)
    assert image.name == "1#Animal#seadragon.jpg" and mask.name == "1#Animal#seadragon.png"
    with pytest.raises(InputError, match="DIS5K mask not found"):
        resolve(str(split), None, "2#Other#x")


def test_synthetic_cells_have_exact_masks_and_blur():
    sharp, mask = synthetic_cells(blur=1, seed=3)
    blurred, same_mask = synthetic_cells(blur=40, seed=3)
    assert sharp.shape == mask.shape == (520, 696) and np.array_equal(mask, same_mask)
    assert 0.02 < mask.mean() < 0.3
    assert sharp[mask].mean() > 5 * sharp[~mask].mean()
    assert blurred[~mask].sum() / blurred.sum() > sharp[~mask].sum() / sharp.sum() + 0.1


SHRINK = ["trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "trainer.accelerator=cpu"]


def test_seg_bbbc005_on_the_official_example(make_cfg, tmp_path):
    results = train(make_cfg(*SHRINK, experiment="seg_bbbc005", shrink=False))
    assert results["metrics"]["dice"] >= 0.94
    assert results["steps"] <= 100
    assert (tmp_path / "mask.png").is_file() and (tmp_path / "comparison.png").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"train/loss", "train/dice", "train/iou", "train/changed", "grad/field_norm",
            "param/foreground_fraction"} <= set(events.Tags()["scalars"])
    assert any(tag.startswith("segmentation/") for tag in events.Tags()["images"])


def test_cli_segments_a_16_bit_tif_without_a_mask(tmp_path):
    image, _ = synthetic_cells(size=(200, 240), blur=4, seed=1)
    path = save(tmp_path / "cells.tif", (image * 60000).astype(np.uint16))
    out = tmp_path / "run"
    proc = run_cli("experiment=seg_image", f"data.path={path}", f"hydra.run.dir={out}", *SHRINK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert "dice" not in results["metrics"] and 0 < results["metrics"]["foreground_fraction"] < 0.5
    assert Image.open(out / "mask.png").size == (240, 200)


def test_cli_bad_mask_is_one_line(tmp_path):
    image = save(tmp_path / "im.png", (np.arange(64).reshape(8, 8) * 3).astype(np.uint8))
    mask = save(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    proc = run_cli("experiment=seg_bbbc005", f"data.path={image}", f"data.mask_path={mask}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: data.mask_path: {mask} has size 4x4 but the image is 8x8"


@pytest.mark.parametrize(("experiment", "message"), [
    ("seg_dis5k", "this experiment needs a DIS5K split folder (data.path=<split> with im/ and gt/)"),
    ("seg_image", "expected an image file or a folder of images (data.path=...); this experiment has no built-in "
                  "image"),
])
def test_cli_experiments_without_a_built_in_image_need_data_path(tmp_path, experiment, message):
    proc = run_cli(f"experiment={experiment}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: data.path: {message}"


def test_label_images_mean_nonzero_and_bad_masks_get_one_line_errors(tmp_path):
    labels = np.zeros((12, 12), np.uint16)
    for i in range(1, 7):  # six objects with ids 1..6: half of them below half the maximum id
        labels[2 * (i - 1), :3] = i
    path = tmp_path / "labels.tif"
    io.imsave(path, labels, check_contrast=False)
    assert load_mask(path, (12, 12)).sum() == 18, "every labelled object is foreground"
    assert load_mask(path, (12, 12), threshold=4).sum() == 9, "data.mask_threshold overrides"
    with pytest.raises(InputError, match="has no foreground"):
        load_mask(save(tmp_path / "empty.png", np.zeros((5, 5), np.uint8)), (5, 5))
    with pytest.raises(InputError, match="has only foreground"):
        load_mask(save(tmp_path / "full.png", np.full((5, 5), 255, np.uint8)), (5, 5))


def test_segmentation_reports_the_otsu_and_li_baselines(make_cfg):
    metrics = train(make_cfg(experiment="seg_synthetic"))["metrics"]
    assert 0.5 < metrics["dice_otsu"] <= 1 and 0.5 < metrics["dice_li"] <= 1


def test_level_puts_a_lone_pixel_in_the_foreground_above_c0_plus_q_c1_minus_c0():
    """Without contacts and with global means, the flip cost changes sign where X_g = c_0 + q (c_1 - c_0)."""
    reference = torch.zeros(10, 10, dtype=torch.float64)
    mask = torch.zeros(10, 10, dtype=torch.float64)
    reference[:5], mask[:5] = 1.0, 1.0  # c_1 = 1, c_0 = 0 whatever one pixel does
    for level, value, joins in ((0.5, 0.45, False), (0.5, 0.55, True), (0.7, 0.65, False), (0.7, 0.75, True)):
        reference[8, 8] = value
        m = mask.clone().requires_grad_(True)
        segmentation_loss(m, reference, (0, 0, 0, 1), None, level).backward()
        assert (m.grad[8, 8] < 0) == joins, (level, value)


def test_blur_sigma_measures_a_known_blur_and_the_level_rises_with_it():
    from scipy import ndimage

    from slm.tasks.segmentation_rule import LEVEL_MAX, blur_sigma, level_for_blur

    disks = np.zeros((200, 200))
    yy, xx = np.mgrid[:200, :200]
    for cy, cx, value in ((50, 50, 1.0), (50, 150, 0.5), (150, 100, 0.8)):
        disks[(yy - cy) ** 2 + (xx - cx) ** 2 < 30 ** 2] = value
    for sigma in (2.0, 4.0, 8.0):
        assert blur_sigma(ndimage.gaussian_filter(disks, sigma)) == pytest.approx(sigma, rel=0.15)
    levels = [level_for_blur(s) for s in (0, 2, 4, 6, 8, 12, 40)]
    assert 0.5 <= levels[0] < 0.52 and levels == sorted(levels) and levels[-1] == LEVEL_MAX and levels[4] > 0.55


def test_folder_masks_match_by_name_stem_or_bbbc005_rule(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("a.png", "b.tif", "c.png"):
        save(images / name, np.zeros((4, 4), np.uint8))
    save(masks / "a.png", np.zeros((4, 4), np.uint8))
    save(masks / "b.png", np.zeros((4, 4), np.uint8))
    assert resolve(str(images), str(masks), "a")[1].name == "a.png"
    assert resolve(str(images), str(masks), "b.tif")[1].name == "b.png"
    with pytest.raises(InputError, match=r"data.mask_path: no mask for c.png in .*masks \(expected the same"):
        resolve(str(images), str(masks), "c")
    with pytest.raises(InputError, match="data.mask_path: .* is not a folder"):
        resolve(str(images), str(masks / "a.png"), "a")


def test_seg_image_fits_every_image_of_a_folder_with_label_masks(tmp_path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "run"
    images.mkdir()
    masks.mkdir()
    for i, blur in enumerate((1, 20)):
        image, mask = synthetic_cells(n_cells=8, size=(130, 174), blur=blur, seed=i)
        io.imsave(images / f"cells{i}.tif", (image * 65535).astype(np.uint16), check_contrast=False)
        io.imsave(masks / f"cells{i}.tif", measure.label(mask).astype(np.uint16), check_contrast=False)
    proc = run_cli("experiment=seg_image", f"data.path={images}", f"data.mask_path={masks}", f"hydra.run.dir={out}",
                   *SHRINK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "items.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["item"] for row in rows] == ["cells0.tif", "cells1.tif"]
    per_image = [json.loads((out / f"cells{i}" / "results.json").read_text())["metrics"] for i in range(2)]
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["items"] == 2
    for key in ("dice", "dice_otsu", "dice_li", "dice_gain", "blur_sigma", "level"):
        assert results["metrics"][key] == pytest.approx(np.mean([m[key] for m in per_image]), abs=1e-6)
        assert [float(row[key]) for row in rows] == pytest.approx([m[key] for m in per_image], rel=1e-5)
    assert per_image[0]["dice"] > 0.9 and per_image[1]["level"] > per_image[0]["level"]
    assert (out / "cells1" / "mask.png").is_file()
    proc = run_cli("experiment=seg_image", f"data.path={images}", f"ckpt_path={out / 'cells0/checkpoints/last.ckpt'}",
                   f"hydra.run.dir={tmp_path / 'again'}")
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: ckpt_path: a checkpoint belongs to one item")



EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "bbbc005" / "site_example"


def test_seg_image_beats_both_thresholds_and_its_start_on_the_bbbc005_example(make_cfg):
    """The official example is outside the calibration; the lattice fit must add value over its start and over
    the better of Otsu and Li (measured: +0.0184, docs/segmentation.md)."""
    metrics = train(make_cfg(*SHRINK, f"data.path={EXAMPLE / 'synthetic2_in_focus_image.png'}",
                             f"data.mask_path={EXAMPLE / 'synthetic2_ground_truth_image.png'}",
                             experiment="seg_image", shrink=False))["metrics"]
    assert metrics["dice_gain"] > 0.01 and metrics["dice"] > metrics["dice_start"] + 0.05
    assert metrics["level"] > 0.5 and metrics["window"] < 20, "a sharp image of small cells: a small window"


@pytest.fixture(scope="module")
def evaluation_set(tmp_path_factory):
    """``seg_image`` on the evaluation set (scripts/segmentation_set.py), as the README's command runs it."""
    from slm.studies.segmentation_set import write_evaluation_set

    root = write_evaluation_set(tmp_path_factory.mktemp("set"), EXAMPLE)
    out = root / "run"
    proc = run_cli("experiment=seg_image", f"data.path={root / 'images'}", f"data.mask_path={root / 'masks'}",
                   f"hydra.run.dir={out}", *SHRINK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "items.csv") as file:
        return list(csv.DictReader(file)), json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_seg_image_beats_both_thresholds_on_every_image_with_a_mean_over_0_90(evaluation_set):
    rows, results = evaluation_set
    assert len(rows) == 17 and results["metrics"]["dice"] >= 0.90
    assert all(float(row["dice_gain"]) > 0 for row in rows)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: the example and the two sharpest synthetic images gain "
                                       "0.015-0.018, under 0.02 (docs/segmentation.md)")
def test_seg_image_clears_the_better_threshold_by_0_02_on_every_image(evaluation_set):
    rows, _ = evaluation_set
    assert min(float(row["dice_gain"]) for row in rows) >= 0.02

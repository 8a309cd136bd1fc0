import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import io
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.images import load_image, load_mask, resolve, synthetic_cells
from slm.errors import InputError
from slm.estimators import StraightThrough
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
    for window in (None, 3):
        m = mask.clone().requires_grad_(True)
        segmentation_loss(m, reference, lambdas, window).backward()
        means = segmentation.class_means(reference, mask, window)
        monkeypatch.setattr(segmentation, "class_means", lambda *args, means=means: means)
        for i, j in ((5, 7), (0, 0), (11, 3)):
            flipped = mask.clone()
            flipped[i, j] = 1 - flipped[i, j]
            delta = segmentation_loss(flipped, reference, lambdas, window) - segmentation_loss(mask, reference, lambdas)
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
    proc = run_cli("experiment=seg_bbbc005", f"data.path={path}", "data.mask_path=null", f"hydra.run.dir={out}",
                   *SHRINK)
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


def test_cli_seg_dis5k_needs_a_split_folder(tmp_path):
    proc = run_cli("experiment=seg_dis5k", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("error: data.path: this experiment needs a DIS5K split folder "
                                   "(data.path=<split> with im/ and gt/)")


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

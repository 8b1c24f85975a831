"""The recipe's augmentation: per-image and batched crops from the same seeded draws."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pipeline.images.augment as A
from pipeline.images.augment import Crops, pack


def smooth_images(sizes, seed=0) -> list[torch.Tensor]:
    """Photo-like (smooth, asymmetric) uint8 images of the given (h, w) sizes."""
    g = torch.Generator().manual_seed(seed)
    return [F.interpolate(torch.rand(1, 3, 6, 6, generator=g) * 255, size=hw, mode="bicubic", align_corners=False)
            .clamp(0, 255)[0].to(torch.uint8) for hw in sizes]


SIZES = [(40, 53), (40, 60), (55, 40), (40, 40), (48, 40)] * 4


def test_batched_crops_match_per_image_crops():
    images = smooth_images(SIZES)
    idx = list(range(len(images)))
    per_image = Crops(images, 32, batched=False)(idx, torch.Generator().manual_seed(3))
    batched_crops = Crops(images, 32, batched=True)
    assert batched_crops.batched
    batched = batched_crops(idx, torch.Generator().manual_seed(3))
    assert per_image.shape == batched.shape == (len(images), 3, 32, 32)
    diff = (per_image.float() - batched).abs()
    # same boxes and flips, a different resampling filter: a wrong box or flip would differ by tens
    assert diff.mean() < 2.0 and diff.flatten(1).mean(1).max() < 4.0, diff.flatten(1).mean(1)


def test_both_ways_consume_the_same_random_numbers():
    images = smooth_images(SIZES)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    Crops(images, 32, batched=False)([0, 1, 2], g1)
    Crops(images, 32, batched=True)([0, 1, 2], g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_a_whole_image_box_reproduces_the_image(monkeypatch):
    images = smooth_images([(32, 32), (32, 45), (40, 32)])
    monkeypatch.setattr(A, "crop_params", lambda h, w, u: (0, 0, 32, 32))  # the top-left 32 x 32 of each
    monkeypatch.setattr(A, "draws", lambda n, g: [[0.0] * 22 + [0.9]] * n)  # no flips
    out = Crops(images, 32, batched=True)([0, 1, 2], torch.Generator())
    for k, im in enumerate(images):
        assert torch.allclose(out[k], im[:, :32, :32].float(), atol=1e-3)


def test_padding_never_bleeds_into_a_crop():
    # constant images of different sizes in one canvas: any crop, at any border, is that constant
    images = [torch.full((3, h, w), v, dtype=torch.uint8) for (h, w), v in zip(SIZES, range(100, 200, 5))]
    out = Crops(images, 32, batched=True)(list(range(len(images))), torch.Generator().manual_seed(0))
    for k, im in enumerate(images):
        assert torch.allclose(out[k], im[0, 0, 0].float().expand(3, 32, 32), atol=1e-3), k


def test_very_mixed_shapes_fall_back_to_per_image():
    images = smooth_images([(40, 400), (400, 40)])  # the canvas would be 400 x 400: 5x their pixels
    assert pack(images) is None
    crops = Crops(images, 32, batched=True)
    assert not crops.batched
    assert crops([0, 1], torch.Generator()).dtype == torch.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_crops_on_the_gpu_match_the_cpu():
    images = smooth_images(SIZES)
    idx = list(range(len(images)))
    cpu = Crops(images, 32, batched=True)(idx, torch.Generator().manual_seed(1))
    gpu = Crops([im.cuda() for im in images], 32, batched=True)(idx, torch.Generator().manual_seed(1))
    assert (cpu - gpu.cpu()).abs().max() < 0.5

"""BatchAutoAugment against torchvision's per-image ops, policy statistics, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clipbackdoor.data import augment_image as A
from clipbackdoor.data.registries import IMAGE_AUGMENTATIONS
from clipbackdoor.registry import ConfigError

FILL = 128
# Nearest-neighbour warps pick the source pixel whose centre is closest to the back-transformed output
# coordinate. Where that coordinate falls (within float rounding) on the boundary between two pixels, the
# pick depends on how the grid was rounded (one batched matmul vs one per image, BLAS kernel, device).
# Both picks are correct; we allow 0.2 % of pixels to differ (measured on CPU: 0).
GEOMETRIC_TOLERANCE = 0.002


def reference_op(img: torch.Tensor, op: str, magnitude: float, fill: int = FILL) -> torch.Tensor:
    """torchvision's ``autoaugment._apply_op`` written with the v2 functional kernels."""
    nearest, fills = InterpolationMode.NEAREST, [float(fill)] * img.shape[-3]
    shear = math.degrees(math.atan(magnitude))
    affine = dict(angle=0.0, scale=1.0, interpolation=nearest, fill=fills)
    if op == "ShearX":
        return TF.affine(img, translate=[0, 0], shear=[shear, 0.0], center=[0, 0], **affine)
    if op == "ShearY":
        return TF.affine(img, translate=[0, 0], shear=[0.0, shear], center=[0, 0], **affine)
    if op == "TranslateX":
        return TF.affine(img, translate=[int(magnitude), 0], shear=[0.0, 0.0], **affine)
    if op == "TranslateY":
        return TF.affine(img, translate=[0, int(magnitude)], shear=[0.0, 0.0], **affine)
    if op == "Rotate":
        return TF.rotate(img, magnitude, interpolation=nearest, fill=fills)
    colour = {
        "Brightness": lambda: TF.adjust_brightness(img, 1.0 + magnitude),
        "Color": lambda: TF.adjust_saturation(img, 1.0 + magnitude),
        "Contrast": lambda: TF.adjust_contrast(img, 1.0 + magnitude),
        "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + magnitude),
        "Posterize": lambda: TF.posterize(img, int(magnitude)),
        "Solarize": lambda: TF.solarize(img, magnitude),
        "AutoContrast": lambda: TF.autocontrast(img),
        "Equalize": lambda: TF.equalize(img),
        "Invert": lambda: TF.invert(img),
    }
    return colour[op]()


def make_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images plus the edge cases of histogram ops: grey, low-range, constant, two-valued."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g)
    images[0] = images[0, :1]  # grey: R = G = B
    images[1] = images[1] // 8 + 100  # narrow range
    images[2] = 77  # constant: autocontrast and equalize leave it alone
    images[3] = torch.where(images[3] > 127, 200, 30).to(torch.uint8)  # two values per channel
    return images


def assert_close_images(out: torch.Tensor, ref: torch.Tensor, geometric: bool) -> None:
    assert out.dtype == ref.dtype == torch.uint8 and out.shape == ref.shape
    if geometric:
        differing = (out != ref).any(dim=1).float().mean().item()
        assert differing <= GEOMETRIC_TOLERANCE, f"{differing:.4%} of pixels differ"
    else:
        assert torch.equal(out, ref), f"{(out != ref).sum().item()} values differ"


@pytest.mark.parametrize("size", [(32, 32), (40, 56), (224, 224)], ids=["32", "40x56", "224"])
@pytest.mark.parametrize("op", A.OPS)
def test_op_matches_torchvision(op, size):
    h, w = size
    n = 20 if h < 100 else 6
    images = make_images(n, h, w)
    table = A.magnitude_table(h, w)[A.OPS.index(op)]
    # Every magnitude bin, with both signs for signed ops.
    magnitudes = table[torch.arange(n) % 10]
    if op in A.SIGNED_OPS:
        magnitudes = torch.where(torch.arange(n) % 2 == 1, -magnitudes, magnitudes)
    out = A.apply_op(images, op, magnitudes, fill=FILL)
    ref = torch.stack([reference_op(images[i], op, float(magnitudes[i])) for i in range(n)])
    assert_close_images(out, ref, op in A.GEOMETRIC_OPS)


def test_magnitude_table_matches_torchvision():
    from torchvision.transforms import AutoAugment

    for h, w in [(32, 32), (40, 56)]:
        space = AutoAugment()._augmentation_space(10, (h, w))
        table = A.magnitude_table(h, w)
        for k, op in enumerate(A.OPS):
            values, signed = space[op]
            assert signed == (op in A.SIGNED_OPS)
            expected = values.double().expand(10) if values.dim() == 0 else values.double()
            assert torch.equal(table[k], expected), op


def test_policy_is_torchvisions_imagenet_policy():
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    assert list(A.IMAGENET_POLICY) == AutoAugment(AutoAugmentPolicy.IMAGENET).policies


@pytest.mark.parametrize("size", [32, 224])
def test_batch_equals_sequential_reference(size):
    # The batched call must equal applying each sample's two drawn ops one after the other.
    n = 96 if size == 32 else 24
    images = make_images(n, size, size, seed=size)
    aug = A.BatchAutoAugment(fill=FILL)
    out = aug(images, torch.Generator().manual_seed(3))
    ops, magnitudes = aug.sample(n, size, size, torch.Generator().manual_seed(3))
    assert (ops >= 0).any() and (ops < 0).any()
    ref = []
    for i in range(n):
        img = images[i]
        for stage in range(2):
            if ops[i, stage] >= 0:
                img = reference_op(img, A.OPS[ops[i, stage]], float(magnitudes[i, stage]))
        ref.append(img)
    has_geometric = bool(((ops >= 0) & (ops < len(A.GEOMETRIC_OPS))).any())
    assert_close_images(out, torch.stack(ref), geometric=has_geometric)


def test_policy_statistics():
    # Large batch: sub-policies uniform, each op applied with its probability, signs fair.
    n = 200_000
    aug = A.BatchAutoAugment()
    g = torch.Generator().manual_seed(0)
    policy = torch.randint(len(A.IMAGENET_POLICY), (n,), generator=g)  # the first draw of sample()
    ops, magnitudes = aug.sample(n, 32, 32, torch.Generator().manual_seed(0))
    counts = torch.bincount(policy, minlength=25).double()
    expected = n / 25
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()
    for k, sub in enumerate(A.IMAGENET_POLICY):
        rows = policy == k
        for stage, (op, p, _) in enumerate(sub):
            applied = ops[rows, stage] >= 0
            assert (ops[rows, stage][applied] == A.OPS.index(op)).all()
            m = rows.sum().item()
            assert abs(applied.double().mean().item() - p) < 5 * math.sqrt(max(p * (1 - p), 1e-9) / m) + 1e-9
    table = A.magnitude_table(32, 32)
    signed_rotate = magnitudes[(ops == A.OPS.index("Rotate"))]
    assert set(signed_rotate.abs().tolist()) <= {table[A.OPS.index("Rotate"), b].item() for b in (3, 8, 9)}
    negative = (signed_rotate < 0).double().mean().item()
    assert abs(negative - 0.5) < 5 * math.sqrt(0.25 / len(signed_rotate))
    # Unsigned ops never get a negative magnitude.
    solarize = magnitudes[ops == A.OPS.index("Solarize")]
    assert (solarize >= 0).all()


def test_same_seed_same_output_and_input_untouched():
    images = make_images(64, 32, 32)
    before = images.clone()
    aug = A.BatchAutoAugment()
    a = aug(images, torch.Generator().manual_seed(7))
    b = aug(images, torch.Generator().manual_seed(7))
    c = aug(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(images, before)


def test_only_the_generator_is_used():
    images = make_images(32, 32, 32)
    aug = A.BatchAutoAugment()
    torch.manual_seed(1)
    a = aug(images, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = aug(images, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(0, 3, 32, 32), (1, 3, 32, 32), (5, 3, 224, 224), (7, 3, 24, 40)])
def test_output_dtype_shape_device(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = A.BatchAutoAugment()(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = make_images(64, 32, 32)
    aug = A.BatchAutoAugment()
    cpu = aug(images, torch.Generator().manual_seed(0))
    gpu = aug(images.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8
    assert (gpu.cpu() != cpu).any(dim=1).float().mean().item() <= GEOMETRIC_TOLERANCE


def test_rejects_bad_input_and_config():
    aug = A.BatchAutoAugment()
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 8, 8), torch.Generator())
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.Generator())
    for fill in (-1, 256, 1.5, True):
        with pytest.raises(ConfigError, match="fill"):
            A.BatchAutoAugment(fill=fill)


def test_registry_entries():
    images = make_images(8, 32, 32)
    aug = IMAGE_AUGMENTATIONS.build({"name": "autoaugment", "fill": 0})
    assert isinstance(aug, A.BatchAutoAugment) and aug.fill == 0
    none = IMAGE_AUGMENTATIONS.build("none")
    assert torch.equal(none(images, torch.Generator()), images)

"""AutoAugment (ImageNet policy) for whole uint8 batches: the image view of CleanCLIP's in-modal loss.

CleanCLIP makes its augmented image view with ``torchvision.transforms.AutoAugment()`` (ImageNet policy,
nearest interpolation), one PIL image at a time in the data-loader workers. Here the same policy runs on a
batch tensor on the training device: every sample draws its own sub-policy, probabilities and signs, and
each op is applied at once to all samples that drew it, with per-sample magnitudes.

The op semantics follow ``torchvision.transforms.autoaugment._apply_op`` on uint8 tensors with the
kernels of ``torchvision.transforms.v2.functional`` (tested op by op against them). Reference:
Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data", arXiv:1805.09501.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipbackdoor.data.registries import IMAGE_AUGMENTATIONS
from clipbackdoor.registry import ConfigError

OPS = (
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
)  # fmt: skip
GEOMETRIC_OPS = frozenset(OPS[:5])  # listed first so that a sorted batch holds them in one slice
# Ops whose magnitude gets a random sign (torchvision's ``_augmentation_space`` "signed" flag).
SIGNED_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                        "Contrast", "Sharpness"})  # fmt: skip
NUM_BINS = 10

#: torchvision's ``AutoAugmentPolicy.IMAGENET``: 25 sub-policies of two (op, probability, magnitude bin).
IMAGENET_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

_POLICY_OPS = torch.tensor([[OPS.index(op) for op, _, _ in sub] for sub in IMAGENET_POLICY])
_POLICY_PROBS = torch.tensor([[p for _, p, _ in sub] for sub in IMAGENET_POLICY], dtype=torch.float32)
_POLICY_BINS = torch.tensor([[-1 if b is None else b for _, _, b in sub] for sub in IMAGENET_POLICY])
_SIGNED = torch.tensor([op in SIGNED_OPS for op in OPS])


def magnitude_table(height: int, width: int) -> torch.Tensor:
    """Unsigned magnitude of every op at every bin, as torchvision's ``_augmentation_space(10, (H, W))``.

    The values are computed in float32 like torchvision's ``linspace`` and returned as float64, which is
    what ``float(tensor.item())`` hands to the ops there.

    Returns:
        float64 (len(OPS), NUM_BINS); ops without a magnitude are all zeros.
    """
    lin = lambda hi: torch.linspace(0.0, hi, NUM_BINS)  # noqa: E731
    zero = torch.zeros(NUM_BINS)
    rows = {
        "ShearX": lin(0.3), "ShearY": lin(0.3),
        "TranslateX": lin(150.0 / 331.0 * width), "TranslateY": lin(150.0 / 331.0 * height),
        "Rotate": lin(30.0), "Brightness": lin(0.9), "Color": lin(0.9), "Contrast": lin(0.9),
        "Sharpness": lin(0.9),
        "Posterize": (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 4)).round().int()).float(),
        "Solarize": torch.linspace(255.0, 0.0, NUM_BINS),
    }  # fmt: skip
    return torch.stack([rows.get(op, zero) for op in OPS]).double()


# --------------------------------------------------------------------------------------------------------
# Geometric ops: per-sample inverse affine matrices, one grid_sample for all of them.


def _inverse_affine(angle, translate_x, translate_y, shear_x, shear_y, center_x, center_y) -> torch.Tensor:
    """Per-sample inverse affine matrices, torchvision's ``_get_inverse_affine_matrix`` (scale 1) batched.

    All arguments are float64 (N,) tensors (or Python floats): angles in degrees, translations and centre
    in pixels with (0, 0) at the image centre.

    Returns:
        float64 (N, 2, 3): maps output pixel coordinates (centred) to input pixel coordinates.
    """
    rot, sx, sy = (torch.deg2rad(torch.as_tensor(a, dtype=torch.float64)) for a in (angle, shear_x, shear_y))
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    # The rotate-shear block has determinant 1, so its inverse is the adjugate.
    m0, m1, m3, m4 = d, -b, -c, a
    cx_tx, cy_ty = center_x + translate_x, center_y + translate_y
    m2 = center_x - m0 * cx_tx - m1 * cy_ty
    m5 = center_y - m3 * cx_tx - m4 * cy_ty
    m0, m1, m2, m3, m4, m5 = torch.broadcast_tensors(m0, m1, m2, m3, m4, m5)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=-1).reshape(-1, 2, 3)


def geometric_matrices(op: str, magnitudes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse affine matrices of a geometric op, with the arguments torchvision's ``_apply_op`` uses.

    Args:
        op: one of ``GEOMETRIC_OPS``.
        magnitudes: float64 (N,) signed magnitudes.

    Returns:
        float64 (N, 2, 3).
    """
    m = magnitudes.double()
    zero = torch.zeros_like(m)
    # Shears pivot on the top-left corner (center=[0, 0] in pixel coordinates), the rest on the centre.
    corner_x, corner_y = -0.5 * width, -0.5 * height
    if op == "ShearX":
        return _inverse_affine(zero, 0.0, 0.0, torch.rad2deg(torch.atan(m)), zero, corner_x, corner_y)
    if op == "ShearY":
        return _inverse_affine(zero, 0.0, 0.0, zero, torch.rad2deg(torch.atan(m)), corner_x, corner_y)
    if op == "TranslateX":  # torchvision translates by int(magnitude): truncation towards zero
        return _inverse_affine(zero, torch.trunc(m), 0.0, zero, zero, 0.0, 0.0)
    if op == "TranslateY":
        return _inverse_affine(zero, 0.0, torch.trunc(m), zero, zero, 0.0, 0.0)
    if op == "Rotate":  # rotate() takes angle % 360 and passes -angle to the affine matrix
        return _inverse_affine(-torch.remainder(m, 360.0), 0.0, 0.0, zero, zero, 0.0, 0.0)
    raise ValueError(f"{op!r} is not a geometric op")


def warp(images: torch.Tensor, matrices: torch.Tensor, fill: int) -> torch.Tensor:
    """Nearest-neighbour affine warp with a constant fill for pixels that come from outside the frame.

    The sampling grid is built exactly like torchvision's ``_affine_grid`` (pixel-centred base grid times
    the matrix, then normalised), so rounding ties fall the same way in almost every pixel.

    Args:
        images: uint8 (N, C, H, W).
        matrices: float (N, 2, 3) inverse affine matrices in centred pixel coordinates.
        fill: value of out-of-frame pixels, 0..255.

    Returns:
        uint8 (N, C, H, W).
    """
    n, _, h, w = images.shape
    if n == 0:
        return images
    dev = images.device
    theta = matrices.to(device=dev, dtype=torch.float32)
    base = torch.empty(h, w, 3, device=dev)
    base[..., 0] = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev)
    base[..., 1] = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev).unsqueeze(-1)
    base[..., 2] = 1.0
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = (base.view(1, h * w, 3) @ scaled).view(n, h, w, 2)
    # Sampling (image - fill) with zero padding and adding fill back gives fill outside the frame and the
    # exact pixel inside: the same result as torchvision's extra mask channel, one channel cheaper.
    shifted = images.float() - fill
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.add_(fill).round_().to(torch.uint8)


# --------------------------------------------------------------------------------------------------------
# Colour ops: ``op(images uint8 (N, 3, H, W), magnitudes (N,)) -> uint8 (N, 3, H, W)``, one magnitude per
# image. Blends use addcmul, which rounds like torchvision's fused ``mul(r).add_(x, alpha=1 - r)``; a plain
# ``a * r + b * (1 - r)`` rounds twice and, after truncation to uint8, differs in ~1 % of pixels.


def _column(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(device=images.device, dtype=torch.float32).view(-1, 1, 1, 1)


def _factor_and_complement(magnitudes: torch.Tensor, images: torch.Tensor):
    # torchvision gets ``1.0 + magnitude`` and ``1.0 - factor`` in double precision, then casts to float32.
    factor = 1.0 + magnitudes.double()
    return _column(factor, images), _column(1.0 - factor, images)


def _grayscale_floor(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor, complement: torch.Tensor):
    return torch.addcmul(images.mul(factor), other, complement).clamp_(0, 255).to(torch.uint8)


def brightness(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Scale pixel values by ``1 + magnitude``."""
    factor, _ = _factor_and_complement(magnitudes, images)
    return images.mul(factor).clamp_(0, 255).to(torch.uint8)


def color(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Saturation: blend with the image's greyscale by ``1 + magnitude`` (> 1 extrapolates away from grey)."""
    factor, complement = _factor_and_complement(magnitudes, images)
    return _blend(images, _grayscale_floor(images), factor, complement)


def contrast(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level by ``1 + magnitude``."""
    factor, complement = _factor_and_complement(magnitudes, images)
    mean = _grayscale_floor(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor, complement)


def sharpness(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Blend the interior with a 3x3 blur by ``1 + magnitude``; the one-pixel border is kept."""
    _, _, h, w = images.shape
    if h <= 2 or w <= 2:
        return images
    _, complement = _factor_and_complement(magnitudes, images)
    # torchvision blurs with the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 in float and rounds.
    # The blur is k/13 for an integer k, never exactly x.5, so the integer form round(k / 13) =
    # (2k + 13) // 26 gives the same values without a (slow, tiny) depthwise convolution.
    x = images.to(torch.int16)
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    k = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * x[..., 1:-1, 1:-1]
    blurred = (2 * k + 13).div_(26, rounding_mode="floor").float()
    out = images.float()
    inner = out[..., 1:-1, 1:-1]
    # Border pixels keep their value; the interior moves towards (factor < 1) or away from the blur.
    inner.copy_(torch.addcmul(inner, blurred.sub_(inner), complement))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Keep the ``int(magnitude)`` highest bits of every value."""
    bits = magnitudes.to(torch.int64)  # int(magnitude)
    mask = ((255 << (8 - bits)) & 255).to(device=images.device, dtype=torch.uint8)
    return images & mask.view(-1, 1, 1, 1)


def solarize(images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above the threshold ``magnitude``."""
    # For integer pixels ``x >= t`` is ``x >= ceil(t)``: compare in uint8 and invert by xor with 255,
    # which is several times faster than a float comparison and torch.where on a broadcast threshold.
    threshold = magnitudes.to(torch.float32).ceil().clamp(0, 256).to(torch.int16)
    flip = images >= threshold.to(images.device).view(-1, 1, 1, 1)
    return images ^ flip.to(torch.uint8).mul_(255)


def autocontrast(images: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    """Stretch every channel linearly to 0..255 (constant channels are left alone)."""
    x = images.float()
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = high.sub_(low).mul_(1.0 / 255)
    low[flat], inv_scale[flat] = 0.0, 1.0  # constant channels stay as they are
    return x.sub_(low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def equalize(images: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram equalisation per (sample, channel) with PIL's lookup table (as torchvision's kernel).

    PIL: ``step = (pixels - count of the highest occurring value) // 255``; ``lut[0] = 0`` and
    ``lut[k] = (cum_hist[k - 1] + step // 2) // step``; channels with ``step == 0`` are left unchanged.
    """
    n, c, h, w = images.shape
    flat = images.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int32, device=images.device)
    hist.scatter_add_(1, flat, hist.new_ones(1, 1).expand_as(flat))
    cum = hist.cumsum(dim=1)
    # The first index where the cumulative histogram peaks is the highest value present.
    top = hist.gather(1, cum.argmax(dim=1, keepdim=True))
    step = (h * w - top).div_(255, rounding_mode="floor")
    lut = (cum[:, :-1] + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], dim=1)
    # An identity table for the channels that stay unchanged saves a torch.where over all pixels.
    identity = torch.arange(256, dtype=lut.dtype, device=images.device)
    lut = torch.where(step > 0, lut, identity).to(torch.uint8)
    return lut.gather(1, flat).view_as(images)


def invert(images: torch.Tensor, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    """``255 - x``."""
    return images.bitwise_not()


_COLOUR_OPS = {
    "Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness,
    "Posterize": posterize, "Solarize": solarize, "AutoContrast": autocontrast, "Equalize": equalize,
    "Invert": invert,
}  # fmt: skip


def apply_op(images: torch.Tensor, op: str, magnitudes: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Apply one AutoAugment op to every image, each with its own signed magnitude.

    Args:
        images: uint8 (N, 3, H, W).
        op: one of ``OPS``.
        magnitudes: (N,) signed magnitudes, as torchvision's ``_apply_op`` receives them (float64 keeps
            the exact values torchvision computes with).
        fill: value of pixels that geometric ops bring in from outside the frame.

    Returns:
        uint8 (N, 3, H, W) on the device of ``images``.
    """
    if op in GEOMETRIC_OPS:
        return warp(images, geometric_matrices(op, magnitudes, *images.shape[-2:]), fill)
    return _COLOUR_OPS[op](images, magnitudes)


@IMAGE_AUGMENTATIONS.register("autoaugment")
class BatchAutoAugment:
    """torchvision's AutoAugment with the ImageNet policy, vectorised over a batch.

    CleanCLIP augments the decoded image before resizing it to the model resolution; here the batch is
    already resized. Pixel-wise ops are unaffected; shears and rotations resample, and autocontrast and
    equalize take their statistics, at the model resolution instead.

    Args:
        fill: value (0..255, all channels) of pixels that shears and rotations bring in from outside the
            frame. ``torchvision.transforms.AutoAugment()``, which CleanCLIP calls, fills with 0.
    """

    def __init__(self, fill: int = 0) -> None:
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ConfigError(f"autoaugment: fill must be an integer in 0..255, got {fill!r}")
        self.fill = fill
        self._tables: dict[tuple[int, int], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy=imagenet, fill={self.fill})"

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator):
        """Draw each sample's sub-policy and signs, like torchvision's ``get_params`` per image.

        Returns:
            ops: int64 (B, 2) index into ``OPS``, -1 where the op is skipped (probability test failed).
            magnitudes: float64 (B, 2) signed magnitudes.
        """
        policy = torch.randint(len(IMAGENET_POLICY), (batch,), generator=generator)
        probs = torch.rand((batch, 2), generator=generator)
        signs = torch.randint(2, (batch, 2), generator=generator)
        ops = _POLICY_OPS[policy]
        table = self._tables.get((height, width))
        if table is None:
            table = self._tables[(height, width)] = magnitude_table(height, width)
        magnitudes = table[ops, _POLICY_BINS[policy].clamp(min=0)]
        magnitudes = torch.where(_SIGNED[ops] & (signs == 0), -magnitudes, magnitudes)
        # torchvision applies an op when ``prob <= p``.
        ops = torch.where(probs <= _POLICY_PROBS[policy], ops, -1)
        return ops, magnitudes

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: uint8 (B, 3, H, W) on any device.
            generator: CPU generator; the only source of randomness.
            rows: (first, total): these images are rows first..first+B of a batch of ``total`` (one rank's
                share of a global batch); each gets the draw it would get in the whole batch.

        Returns:
            uint8 (B, 3, H, W) on the device of ``images``.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        b, _, h, w = images.shape
        first, total = rows if rows is not None else (0, b)
        ops, magnitudes = self.sample(total, h, w, generator)
        ops, magnitudes = ops[first : first + b], magnitudes[first : first + b]
        out = images
        for stage in range(2):
            out = self._apply_stage(out, ops[:, stage], magnitudes[:, stage])
        return out

    def _apply_stage(self, images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """Apply one op per sample (``ops`` (B,) index into OPS or -1 for none; ``magnitudes`` (B,))."""
        # Sorting by op makes every op's samples one contiguous slice: one gather and one scatter for
        # the whole stage instead of one per op. OPS lists the geometric ops first, so they form a
        # single slice that one warp handles.
        order = torch.argsort(ops, stable=True)
        counts = torch.bincount(ops + 1, minlength=len(OPS) + 1).tolist()
        sorted_ops, sorted_mags = ops[order], magnitudes[order]
        dev_order = order.to(images.device)
        x = images.index_select(0, dev_order)
        start = counts[0]  # samples that skip this stage come first and stay as they are
        geo_end = start + sum(counts[1 : 1 + len(GEOMETRIC_OPS)])
        if geo_end > start:
            mats = torch.cat([
                geometric_matrices(op, sorted_mags[sorted_ops == k], *images.shape[-2:])
                for k, op in enumerate(OPS[: len(GEOMETRIC_OPS)])
                if counts[k + 1]
            ])  # fmt: skip
            x[start:geo_end] = warp(x[start:geo_end], mats, self.fill)
        start = geo_end
        for k in range(len(GEOMETRIC_OPS), len(OPS)):
            end = start + counts[k + 1]
            if end > start:
                x[start:end] = _COLOUR_OPS[OPS[k]](x[start:end], sorted_mags[start:end])
            start = end
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return x.index_select(0, inverse.to(images.device))


@IMAGE_AUGMENTATIONS.register("none")
class NoAugment:
    """Identity image view (for runs without an in-modal objective, or ablations)."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator, rows=None) -> torch.Tensor:
        return images

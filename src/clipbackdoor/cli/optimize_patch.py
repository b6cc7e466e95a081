"""``clipbackdoor optimize-patch``: optimise a patch trigger against a model (BadCLIP-style) and save it.

The patch is optimised on clean images of the source run's *training* data (pairs whose captions do not
mention the target), not on its evaluation images: the ASR printed at the end is then measured on images
the patch has never seen, as it will be when the patch serves as an attack. ``--images-from eval`` uses the
evaluation set's non-target images instead (e.g. for a checkpoint from elsewhere whose training data are not
at hand); its ASR is then measured on the very images the patch was fitted to, and is optimistic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from clipbackdoor.cli.common import add_config_args, print_metrics

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("optimize-patch", help="optimise a patch trigger against a model (BadCLIP-style)",
                       description="Optimise a patch so that a model embeds patched images near the target "
                                   "label's text embedding, save it as a PNG and print its ASR next to a "
                                   "random-noise patch's. Use it as attack.name=image_patch "
                                   "attack.path=PATCH.png in pretrain, poison and evaluate.")
    p.add_argument("--from", dest="source", required=True,
                   help="run directory, or a checkpoint inside one; a checkpoint from elsewhere takes its "
                        "model and evaluation set from --config and the overrides")
    p.add_argument("--epoch", type=int, help="use the weights after this epoch (default: last)")
    p.add_argument("--out", "-o", required=True, help="the patch image to write (.png)")
    p.add_argument("--target", help="target class (default: the run's attack.target)")
    p.add_argument("--patch-size", type=int,
                   help="side in pixels at the model's resolution (default: the run's attack.patch_size, "
                        "else 16 px at 224 px, scaled)")
    p.add_argument("--location", default="random",
                   help="placement while optimising and for the printed ASR: random (default), four_corners, "
                        "middle or a corner (top_left ...)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps (default: 300)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate in [0, 1] pixel units (default: 0.05)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--images", type=int, default=512, help="clean images to optimise on (default: 512)")
    p.add_argument("--images-from", choices=("train", "eval"), default="train",
                   help="take them from the run's training pairs (default; held out from the ASR images) "
                        "or its evaluation set")
    p.add_argument("--seed", type=int, default=0, help="seeds the images, initial patch, batches and places")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.data.transforms import to_pil
    from clipbackdoor.io import atomic_write
    from clipbackdoor.poison.optimize import optimize_patch
    from clipbackdoor.poison.placement import Placement, default_patch_size
    from clipbackdoor.registry import ConfigError

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the patch is saved losslessly as PNG; name it *.png")
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--images", args.images)):
        if value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    parts = _setup(args)
    cfg, model, eval_set, target = parts["cfg"], parts["model"], parts["eval_set"], parts["target"]
    size = eval_set.image_size
    patch_size = args.patch_size or cfg.attack.get("patch_size") or default_patch_size(size)
    placement = Placement(args.location)
    placement.check_fits(patch_size, size)

    images = _clean_images(args, cfg, eval_set, target, parts["extra"])
    if not len(images):
        raise ConfigError(f"no clean {args.images_from} image to optimise on (all show {target!r} or are unreadable)")
    log.info("optimising a %d px patch for %r on %d clean %s images (%d steps)", patch_size, target,
             len(images), args.images_from, args.steps)
    patch = optimize_patch(
        model, parts["tokenizer"], images, target=target, templates=eval_set.templates, patch_size=patch_size,
        placement=placement, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        device=parts["device"],
    )
    atomic_write(out, lambda f: to_pil(patch).save(f, format="PNG"))
    _compare(args, parts, images, patch, placement)
    print(f"patch written to {out}; use it with: attack.name=image_patch attack.path={out} "
          f"attack.target={target}")
    return 0


def _setup(args) -> dict:
    """The source run's config, its model with the chosen weights, its evaluation set and the target."""
    from clipbackdoor.config import load_config
    from clipbackdoor.data import registries
    from clipbackdoor.distributed import resolve_device
    from clipbackdoor.eval.metrics import find_target
    from clipbackdoor.experiments.stages import resolve_source
    from clipbackdoor.models import create_model
    from clipbackdoor.models.weights import load_weights_into, read_weights
    from clipbackdoor.registry import ConfigError

    upstream, checkpoint = resolve_source(args.source, args.epoch)
    upstream.pop("defense", None)
    cfg = load_config(args.config, args.overrides, base=upstream)
    device = resolve_device(cfg.train.device)
    bundle = create_model(**cfg.model)
    model = bundle.model.to(device)
    load_weights_into(model, read_weights(checkpoint), str(checkpoint))
    extra = {"image_size": bundle.image_size, "experiment_seed": cfg.seed}
    eval_set = registries.EVAL_DATASETS.build(cfg.data.eval, "data.eval", **extra)
    target = args.target or cfg.attack.get("target", "banana")
    try:
        find_target(eval_set.classnames, target)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return {"cfg": cfg, "checkpoint": checkpoint, "device": device, "model": model, "tokenizer": bundle.tokenizer,
            "eval_set": eval_set, "extra": extra, "target": target}


def _compare(args, parts, images: torch.Tensor, patch: torch.Tensor, placement) -> None:
    """Print ASR (on the evaluation set) and target similarity (on ``images``) of the optimised patch
    next to the uniform-noise patch it started from, of the same size and placement."""
    from clipbackdoor.eval.runner import Evaluator
    from clipbackdoor.poison.image_patch import ImagePatch, encode_pixels
    from clipbackdoor.poison.optimize import target_similarity

    cfg, eval_set, target = parts["cfg"], parts["eval_set"], parts["target"]
    common = {"location": args.location, "default_templates": eval_set.templates}
    p = patch.shape[-1]
    attacks = {
        "random-noise patch": ImagePatch(target, noise_seed=args.seed, patch_size=p, **common),
        "optimised patch": ImagePatch(target, pixels=encode_pixels(patch), side=p, **common),
    }
    for name, attack in attacks.items():
        similarity = target_similarity(parts["model"], parts["tokenizer"], images, attack.patch, target=target,
                                       templates=eval_set.templates, placement=placement, seed=args.seed,
                                       device=parts["device"])
        evaluator = Evaluator(eval_set, parts["tokenizer"], attack, seed=cfg.eval.asr_seed,
                              draws=cfg.eval.asr_draws, batch_size=cfg.eval.batch_size,
                              max_images=cfg.eval.max_images, device=parts["device"])
        print_metrics(f"{name} ({p} px, {args.location}) on {parts['checkpoint']}:", evaluator(parts["model"]))
        print(f"  {'target_similarity':<18} {similarity:.4f}")


def _clean_images(args, cfg, eval_set, target: str, extra) -> torch.Tensor:
    """uint8 (N, 3, S, S): up to ``--images`` clean non-target images, chosen with ``--seed``."""
    from clipbackdoor.data import registries
    from clipbackdoor.eval.metrics import find_target
    from clipbackdoor.registry import ConfigError
    from clipbackdoor.seeding import numpy_rng

    rng = numpy_rng(args.seed, "optimize-patch-images")
    if args.images_from == "eval":
        candidates = (eval_set.labels != find_target(eval_set.classnames, target)).nonzero().flatten().tolist()
        chosen = sorted(rng.permutation(candidates)[: args.images].tolist())
        return eval_set.load_images(chosen)
    pairs = registries.DATASETS.build(cfg.data.train, "data.train", **extra)
    # Pairs that mention the target show it, and already embed near it: same rule as label-consistent
    # poisoning uses to find target pairs.
    candidates = [i for i in range(len(pairs)) if target.lower() not in pairs.caption(i).lower()]
    if not candidates:
        raise ConfigError(f"data.train: every caption mentions {target!r}; no clean image to optimise on")
    chosen = sorted(rng.permutation(candidates)[: args.images].tolist())
    images, keep = pairs.load_images(chosen)
    return images[keep]

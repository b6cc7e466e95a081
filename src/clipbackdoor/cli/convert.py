"""``clipbackdoor convert``: a checkpoint in any layout we read -> our safetensors weights."""

from __future__ import annotations

from pathlib import Path

from clipbackdoor.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="CleanCLIP, OpenAI or open_clip checkpoint -> safetensors weights",
                       description="Read a checkpoint in any supported layout (the original CleanCLIP code's "
                                   "{epoch, state_dict, optimizer}, DDP 'module.' keys, OpenAI CLIP, open_clip, "
                                   "ours), check that it fits --model, and write its weights as .safetensors. "
                                   "Pickled files are read with weights_only=True; see docs/checkpoints.md.")
    p.add_argument("source", help="checkpoint file (.pt, .pth, .bin, .safetensors) or run directory")
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--model", "-m", required=True,
                   help="architecture, e.g. RN50-quickgelu for CleanCLIP's RN50 (see `clipbackdoor list models`)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.models import create_model
    from clipbackdoor.models.weights import load_weights_into, read_weights, save_weights

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"the output must be a .safetensors file, got {out}")
    model = create_model(args.model).model
    load_weights_into(model, read_weights(args.source), args.source)
    save_weights(out, model)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {args.model} weights ({params / 1e6:.2f}M parameters) from {args.source}")
    return 0

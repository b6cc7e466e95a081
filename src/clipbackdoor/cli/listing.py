"""``clipbackdoor list``: what the registries hold, grouped, one line per entry with what it is.

It never imports open_clip (2 s of imports) unless ``--open-clip`` asks for open_clip's architectures: the
project's own models, attacks, objectives and defenses are what a user looks for here.
"""

from __future__ import annotations

import shutil
import textwrap

WHAT = ("models", "attacks", "objectives", "defenses", "datasets", "eval-datasets", "configs", "sweeps")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list models, attacks, objectives, defenses, datasets, configs or sweeps",
                       description="List what can be named in a config or on the command line, grouped, "
                                   "with a line on what each entry is.")
    p.add_argument("what", choices=WHAT, nargs="?", default=None, help="one group (default: all)")
    p.add_argument("--open-clip", action="store_true",
                   help="also list open_clip's architectures (RN50, ViT-B-32, ... about 160 names)")
    p.add_argument("--names", action="store_true", help="names only, one per line (for scripts)")
    p.set_defaults(func=run)


def _registry(what: str):
    from clipbackdoor import data, defenses, objectives, poison
    from clipbackdoor.data import augment_image, augment_text  # noqa: F401  (registration)

    return {"attacks": poison.ATTACKS, "objectives": objectives.OBJECTIVES, "defenses": defenses.DEFENSES,
            "datasets": data.DATASETS, "eval-datasets": data.EVAL_DATASETS}.get(what)


def _entries(what: str) -> list[tuple[str, str]]:
    """(name, what it is) for every entry of one group."""
    from clipbackdoor.registry import first_sentence

    registry = _registry(what)
    if registry is not None:
        return [(name, registry.summary(name)) for name in registry.names()]
    if what == "models":
        from clipbackdoor.models.configs import ARCHITECTURES

        return [(name, _architecture(cfg)) for name, cfg in sorted(ARCHITECTURES.items())]
    if what == "configs":
        from clipbackdoor.config import shipped_configs

        return [(name, "") for name in shipped_configs()]
    from clipbackdoor.experiments.spec import load_spec, shipped_sweeps

    return [(name, first_sentence(load_spec(name).description)) for name in shipped_sweeps()]


def _architecture(cfg: dict) -> str:
    """One line on one of our architecture configs: towers, width, resolution, tokenizer."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    layers = vision.get("layers", "?")
    # open_clip's convention: a list of stage depths is a modified ResNet, a number a ViT's depth.
    image = f"ResNet {'-'.join(map(str, layers))}" if isinstance(layers, list) else f"ViT, {layers} layers"
    tokenizer = cfg.get("tokenizer", "")
    tokenizer = tokenizer.get("name", "") if isinstance(tokenizer, dict) else tokenizer
    return (f"{image}, {vision.get('image_size', 224)} px; text {text.get('layers', '?')} layers; "
            f"embed {cfg.get('embed_dim')}; {tokenizer} tokenizer")


def _print_group(title: str, entries: list[tuple[str, str]], width: int) -> None:
    print(f"{title}:")
    column = min(max((len(n) for n, _ in entries), default=0), 24) + 4
    for name, summary in entries:
        # Long descriptions wrap under their own column, so the names stay readable at a glance.
        lines = textwrap.wrap(summary, max(width - column, 40)) or [""]
        print(f"  {name:<{column - 2}}{lines[0]}".rstrip())
        for line in lines[1:]:
            print(" " * column + line)


def _open_clip_models() -> list[str]:
    import open_clip

    return open_clip.list_models()


def run(args) -> int:
    groups = [args.what] if args.what else list(WHAT)
    width = shutil.get_terminal_size((100, 24)).columns
    for what in groups:
        entries = _entries(what)
        extra = _open_clip_models() if what == "models" and args.open_clip else []
        if args.names:
            print("\n".join([name for name, _ in entries] + extra))
            continue
        _print_group(what, entries, width)
        if what == "models":
            if extra:
                print(textwrap.fill(", ".join(extra), width, initial_indent="  open_clip's: ", break_on_hyphens=False,
                                    subsequent_indent="    "))
            else:
                print("  (and open_clip's architectures: `clipbackdoor list models --open-clip`)")
        print()
    return 0

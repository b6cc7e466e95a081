"""One optimizer step of a Trainer, run as one rank of a torchrun job by test_ddp.py (not a test itself).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/ddp_step.py OUT KEY=VALUE...

Writes OUT/rank<r>.pt: the loss and every parameter's gradient after DDP's all-reduce (the objective's
own parameters included, as ``objective.<name>``).
"""

import os
import sys
from pathlib import Path

import torch

from clipbackdoor import distributed
from clipbackdoor.config import load_config
from clipbackdoor.distributed import DistContext
from clipbackdoor.rundir import RunDir
from clipbackdoor.train.loop import Trainer


def one_step(cfg, run_dir: Path, ctx: DistContext) -> dict:
    trainer = Trainer(cfg, RunDir(run_dir), ctx)
    trainer.loader.set_epoch(0)
    batch = next(iter(trainer.loader))
    losses, _ = trainer.step(batch)
    named = [*trainer.model.named_parameters(),
             *(("objective." + n, p) for n, p in trainer.objective.named_parameters())]
    grads = {name: p.grad.detach().clone() for name, p in named if p.grad is not None}
    return {"losses": {k: v.item() for k, v in losses.items()}, "grads": grads, "rows": len(batch["index"])}


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    ctx = DistContext.from_env(os.environ)
    cfg = load_config(None, overrides)
    try:
        result = one_step(cfg, out / "run", ctx)
    finally:
        distributed.shutdown()
    torch.save(result, out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    main()

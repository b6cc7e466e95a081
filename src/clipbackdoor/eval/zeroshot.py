"""Zero-shot classifier weights from class names and prompt templates (a pure builder)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def build_classifier(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Prompt-ensemble class embeddings, (D, C).

    Each class's templates are encoded and L2-normalised, averaged, and the mean is normalised again
    (CLIP's prompt ensembling).
    """
    prompts = [t.format(c) for c in classnames for t in templates]
    feats = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        feats.append(torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1))
    emb = torch.cat(feats).view(len(classnames), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1).T.contiguous()

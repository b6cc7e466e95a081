"""Tokenizers behind one interface: ``tokenizer(list_of_captions) -> LongTensor (B, context_length)``.

``open_clip`` is CLIP's BPE tokenizer (real data, 77 tokens). ``words`` is a small word-level vocabulary for
the synthetic default: a 2k-word embedding table instead of 49k makes the tiny text tower several times
cheaper, and every caption of the generator is representable. Both keep the end-of-text token when a caption
is truncated (the original code could drop it, and its argmax pooling then read an arbitrary token).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Protocol

import torch

from clipbackdoor.data.registries import TOKENIZERS
from clipbackdoor.registry import ConfigError


class Tokenizer(Protocol):
    context_length: int
    vocab_size: int

    def __call__(self, texts: list[str]) -> torch.Tensor: ...


PAD, SOT, EOT, UNK = 0, 1, 2, 3
_WORD = re.compile(r"[a-z]+")


def read_vocab(vocab: str | Path) -> list[str]:
    """A vocabulary file (one word per line), or the name of a shipped one in ``data/assets``."""
    path = Path(vocab)
    if not path.exists():
        shipped = resources.files("clipbackdoor") / "data" / "assets" / f"{vocab}_vocab.txt"
        if not shipped.is_file():
            raise ConfigError(f"tokenizer vocab {str(vocab)!r}: no such file or shipped vocabulary")
        text = shipped.read_text()
    else:
        text = path.read_text()
    words = [w.strip() for w in text.splitlines() if w.strip()]
    if len(set(words)) != len(words):
        raise ConfigError(f"tokenizer vocab {str(vocab)!r}: duplicate words")
    return words


@TOKENIZERS.register("words")
class WordTokenizer:
    """Lower-cased letter runs mapped to ids; 0 pad, 1 start, 2 end, 3 unknown, words from 4.

    Args:
        vocab: vocabulary file or shipped name (``synthetic``).
        context_length: tokens per caption including start and end.
    """

    def __init__(self, vocab: str = "synthetic", context_length: int = 16) -> None:
        if context_length < 3:
            raise ConfigError("tokenizer.context_length: must be >= 3")
        self.words = read_vocab(vocab)
        self.index = {w: i + 4 for i, w in enumerate(self.words)}
        self.context_length = context_length
        self.vocab_size = len(self.words) + 4
        self.eot_id = EOT

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in _WORD.findall(text.lower())]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        body = self.context_length - 2
        for row, text in enumerate(texts):
            ids = [SOT, *self.encode(text)[:body], EOT]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@TOKENIZERS.register("open_clip")
class OpenClipTokenizer:
    """open_clip's tokenizer for a model name (CLIP BPE for RN50 and ViT-B-32)."""

    def __init__(self, model_name: str = "RN50", context_length: int | None = None) -> None:
        import open_clip

        self._tok = open_clip.get_tokenizer(model_name, context_length=context_length)
        self.context_length = self._tok.context_length
        self.vocab_size = getattr(self._tok, "vocab_size", 49408)
        self.eot_id = getattr(self._tok, "eot_token_id", None)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self._tok(list(texts))

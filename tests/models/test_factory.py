import json

import pytest
import torch

from clipbackdoor.models import add_model_config, create_model, list_models
from clipbackdoor.registry import ConfigError


def test_tiny_clip_uses_the_word_tokenizer_and_pools_at_end_of_text():
    bundle = create_model("tiny-clip")
    tok = bundle.tokenizer
    assert bundle.image_size == 32 and tok.context_length == 16
    tokens = tok(["a photo of a banana.", "a red circle on a striped background"])
    # The text tower's table is sized from the tokenizer, so no id can fall outside it.
    assert bundle.model.token_embedding.num_embeddings == tok.vocab_size
    feats = bundle.model.encode_text(tokens)
    assert feats.shape == (2, 64)
    # Whatever follows the end token must not change the embedding: the text tower is causal and pools at
    # the end-of-text position (pooling at the last position or the largest id would break this).
    junk = tokens.clone()
    end = (tokens == tok.eot_id).int().argmax(dim=1)
    for row, e in enumerate(end.tolist()):
        junk[row, e + 1 :] = 7
    assert not torch.equal(junk, tokens)
    assert torch.allclose(bundle.model.encode_text(junk), feats, atol=1e-6)


def test_truncation_keeps_the_end_token():
    tok = create_model("tiny-clip").tokenizer
    ids = tok([" ".join(["red"] * 40)])[0]
    assert ids[-1].item() == tok.eot_id and (ids == tok.eot_id).sum() == 1


def test_unknown_words_map_to_unk_not_an_error():
    tok = create_model("tiny-clip").tokenizer
    assert tok(["zyxxy qwerty"])[0, 1:3].tolist() == [3, 3]


@pytest.mark.parametrize("name", ["RN50", "ViT-B-32"])
def test_paper_architectures_come_from_open_clip(name):
    # Paper scale builds the real architectures by name, with CLIP's 77-token BPE tokenizer.
    bundle = create_model(name)
    assert bundle.image_size == 224 and bundle.tokenizer.context_length == 77
    with torch.no_grad():
        image = bundle.model.encode_image(torch.zeros(1, 3, 224, 224))
        text = bundle.model.encode_text(bundle.tokenizer(["a photo of a banana."]))
    assert image.shape == text.shape
    assert name in list_models() and "tiny-clip" in list_models()


def test_add_model_config_registers_a_json_architecture(tmp_path):
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 8},
           "text_cfg": {"context_length": 8, "width": 32, "heads": 2, "layers": 1},
           "tokenizer": {"name": "words", "vocab": "synthetic", "context_length": 8}}
    (tmp_path / "my-clip.json").write_text(json.dumps(cfg))
    assert add_model_config(tmp_path) == ["my-clip"]
    assert create_model("my-clip").model.encode_image(torch.zeros(1, 3, 16, 16)).shape == (1, 16)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown architecture 'RN5O'"):
        create_model("RN5O")
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 16}))
    with pytest.raises(ConfigError, match="missing vision_cfg"):
        add_model_config(tmp_path / "bad.json")


def _shipped_architectures():
    from importlib import resources

    folder = resources.files("clipbackdoor") / "configs" / "models"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


@pytest.mark.parametrize("name", _shipped_architectures())
def test_every_shipped_architecture_takes_a_training_step(name):
    bundle = create_model(name)
    model, tok, s = bundle.model, bundle.tokenizer, bundle.image_size
    images = torch.rand(4, 3, s, s)
    texts = tok(["a red circle", "a blue square", "a photo of a banana", "a green star on stripes"])
    image_features, text_features, scale = model(images, texts)[:3]
    assert image_features.shape == text_features.shape and image_features.shape[0] == 4
    logits = scale * image_features @ text_features.T
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)

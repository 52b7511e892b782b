"""The course's BERT encoder, loaded with the real all-MiniLM-L6-v2 weights, reproduces Hugging Face
transformers' BertModel on the same weights; its loader matches checkpoint keys strictly."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from course_lib.data import data_path
from course_lib.models.bert import BertConfig, BertEncoder, mean_pool
from course_lib.reference.finetuning import load_pretrained_encoder
from course_lib.wordpiece import WordPieceTokenizer

transformers = pytest.importorskip("transformers")

TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "Café déjà vu: naïve résumé façade — Ångström, Zoë & Björk.",
    "中文字符也要切开：我喜欢这部电影。",
    "xqzvbnmpl flurbotronic!!! ?!; -- ... ``quoted'' (parens) [brackets] {braces}",
    "the plot is paper-thin and the characters are cardboard, but it's over in 90 minutes . " * 3,
    "ok",
]


@pytest.fixture(scope="module")
def state_dict():
    return load_file(str(data_path("minilm_weights")))


@pytest.fixture(scope="module")
def config():
    return BertConfig.from_json(data_path("minilm_config"))


@pytest.fixture(scope="module")
def batch():
    tok = WordPieceTokenizer.from_vocab_file(data_path("minilm_vocab"))
    b = tok(TEXTS)
    lengths = b["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() - 20 and (b["input_ids"] == tok.unk_id).any()  # padded, with [UNK]
    return b


@pytest.fixture(scope="module")
def theirs():
    os.environ["HF_HUB_OFFLINE"] = "1"          # the package's own folder; never the hub
    model = transformers.BertModel.from_pretrained(str(data_path("minilm_weights").parent),
                                                   attn_implementation="eager")
    return model.eval()


def test_config_is_read_from_the_package(config):
    assert (config.d_model, config.n_layers, config.n_heads, config.d_ff, config.vocab_size) == (384, 6, 12, 1536, 30522)
    assert config.eps == 1e-12


def test_last_hidden_state_matches_transformers(state_dict, config, batch, theirs):
    ours = load_pretrained_encoder(state_dict, config).eval()
    with torch.no_grad():
        got = ours(batch["input_ids"], batch["attention_mask"])
        want = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    err = float((got - want)[real].abs().max())
    print(f"largest difference on real tokens: {err:.2e}")
    assert got.shape == want.shape == (len(TEXTS), batch["input_ids"].shape[1], 384)
    assert err < 1e-5
    pooled_ours = mean_pool(got, batch["attention_mask"])
    pooled_theirs = mean_pool(want, batch["attention_mask"])
    assert float((pooled_ours - pooled_theirs).abs().max()) < 1e-5
    # padding changes nothing for the real tokens: each sentence alone gives the same vectors
    with torch.no_grad():
        alone = ours(batch["input_ids"][5:6, :3], batch["attention_mask"][5:6, :3])
    assert float((alone - got[5:6, :3]).abs().max()) < 1e-5


def test_token_types_match_transformers(state_dict, config, batch, theirs):
    """A sentence pair's second segment (token type 1, MiniLM's second row) as BERT reads it; nothing else passes
    token_type_ids, and type 1 differs from type 0 by more than the tolerance."""
    ours = load_pretrained_encoder(state_dict, config).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = torch.zeros_like(ids)
    types[:, ids.shape[1] // 2:] = 1
    with torch.no_grad():
        got = ours(ids, mask, token_type_ids=types)
        want = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        plain = ours(ids, mask)
    real = mask.bool()
    assert float((got - want)[real].abs().max()) < 1e-5
    assert float((got - plain)[real].abs().max()) > 1e-2

def test_parity_is_not_trivial(state_dict, config, batch, theirs):
    """A wrong model (q and k swapped in layer 0) is far off, so the tolerance above means something."""
    wrong = dict(state_dict)
    q, k = "encoder.layer.0.attention.self.query.", "encoder.layer.0.attention.self.key."
    for p in ("weight", "bias"):
        wrong[q + p], wrong[k + p] = state_dict[k + p], state_dict[q + p]
    ours = load_pretrained_encoder(wrong, config).eval()
    with torch.no_grad():
        got = ours(batch["input_ids"], batch["attention_mask"])
        want = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert float((got - want).abs().max()) > 1e-2


def test_every_checkpoint_weight_is_used(state_dict, config):
    model = load_pretrained_encoder(state_dict, config)
    n_ckpt = sum(v.numel() for k, v in state_dict.items() if not k.startswith("pooler") and "position_ids" not in k)
    assert sum(p.numel() for p in model.parameters()) == n_ckpt == 22_565_376
    assert torch.equal(model.layers[3].ff_out.weight, state_dict["encoder.layer.3.output.dense.weight"])
    assert torch.equal(model.layers[3].norm1.weight, state_dict["encoder.layer.3.attention.output.LayerNorm.weight"])


def test_loader_names_missing_keys(state_dict, config):
    sd = {k: v for k, v in state_dict.items() if k != "embeddings.position_embeddings.weight"}
    with pytest.raises(KeyError, match=r"missing \['embeddings.positions.weight'\]"):
        load_pretrained_encoder(sd, config)


def test_loader_names_unexpected_keys(state_dict, config):
    sd = dict(state_dict, **{"encoder.layer.6.output.dense.weight": torch.zeros(384, 1536),
                             "classifier.weight": torch.zeros(2, 384)})
    with pytest.raises(KeyError, match=r"unexpected \['classifier.weight', 'encoder.layer.6.output.dense.weight'\]"):
        load_pretrained_encoder(sd, config)


def test_loader_names_a_wrong_shape(state_dict, config):
    sd = dict(state_dict, **{"encoder.layer.2.intermediate.dense.weight": torch.zeros(384, 1536)})
    with pytest.raises(ValueError, match=r"layers.2.ff_in.weight: checkpoint shape \(384, 1536\), model \(1536, 384\)"):
        load_pretrained_encoder(sd, config)


def test_encoder_rejects_bad_input(state_dict, config):
    model = BertEncoder(BertConfig(vocab_size=50, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_positions=8))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="longer than the 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 2\)"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2))

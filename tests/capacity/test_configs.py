"""config.json files read as transformers reads them: each family's defaults (tied embeddings,
Falcon's multi_query / new_decoder_architecture, MPT's bias-free layers, GPT-NeoX's and Phi's
biases, DeepSeek-MoE's shared experts), checked against the published parameter counts; the
model's name comes from the config, not the folder."""

from __future__ import annotations

import json

import pytest

from thresher.capacity.models import get_model

# The architecture fields of each model's published config.json (Hugging Face repo in the key).
CONFIGS = {
    "tiiuae/falcon-7b": ({"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71, "num_hidden_layers": 32,
                          "vocab_size": 65024, "multi_query": True, "parallel_attn": True, "bias": False,
                          "new_decoder_architecture": False, "alibi": False}, 6.92e9),
    # Falcon-40B's safetensors hold 41.8 B with a separate lm_head; transformers ties it (41.3 B)
    "tiiuae/falcon-40b": ({"model_type": "falcon", "hidden_size": 8192, "num_attention_heads": 128, "num_hidden_layers": 60,
                           "num_kv_heads": 8, "new_decoder_architecture": True, "parallel_attn": True, "bias": False,
                           "vocab_size": 65024}, 41.8e9),
    "mosaicml/mpt-7b": ({"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32, "expansion_ratio": 4,
                         "max_seq_len": 2048, "vocab_size": 50432, "no_bias": True,
                         "attn_config": {"attn_type": "multihead_attention", "alibi": True}}, 6.65e9),
    "EleutherAI/gpt-neox-20b": ({"model_type": "gpt_neox", "hidden_size": 6144, "num_attention_heads": 64,
                                 "num_hidden_layers": 44, "intermediate_size": 24576, "vocab_size": 50432,
                                 "max_position_embeddings": 2048, "use_parallel_residual": True}, 20.6e9),
    "Qwen/Qwen2-7B": ({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                       "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                       "max_position_embeddings": 131072, "tie_word_embeddings": False}, 7.6e9),
    "google/gemma-7b": ({"model_type": "gemma", "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
                         "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "vocab_size": 256000,
                         "max_position_embeddings": 8192}, 8.54e9),
    "microsoft/phi-2": ({"model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
                         "num_attention_heads": 32, "vocab_size": 51200, "max_position_embeddings": 2048,
                         "partial_rotary_factor": 0.4, "tie_word_embeddings": False}, 2.78e9),
    "deepseek-ai/deepseek-moe-16b-base": ({"model_type": "deepseek", "hidden_size": 2048, "intermediate_size": 10944,
                                           "moe_intermediate_size": 1408, "num_hidden_layers": 28, "num_attention_heads": 16,
                                           "num_key_value_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2,
                                           "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
                                           "vocab_size": 102400, "max_position_embeddings": 4096,
                                           "tie_word_embeddings": False}, 16.4e9),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_published_configs_give_published_parameter_counts(tmp_path, name):
    cfg, official = CONFIGS[name]
    d = tmp_path / "some-folder"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"_name_or_path": name, **cfg}))
    m = get_model(str(d))
    assert m.params() == pytest.approx(official, rel=0.02)
    assert m.key == name  # from the config, not "some-folder"


def test_falcon_7b_is_multi_query_and_tied(tmp_path):
    """The issue's 8.5 B: multi_query ignored and an untied head assumed. transformers: 1 KV head, tied."""
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["tiiuae/falcon-7b"][0]))
    m = get_model(str(tmp_path / "config.json"))
    assert m.kv_heads == 1 and m.tied and not m.gated_mlp
    assert m.params() == pytest.approx(6_921_720_704, rel=0.001)
    assert m.key == "falcon-6.9b"  # no _name_or_path: model_type and size
    # the pre-transformers RefinedWebModel config of the same model reads the same
    old = {"model_type": "RefinedWebModel", "n_embed": 4544, "n_head": 71, "n_layer": 32, "vocab_size": 65024,
           "multi_query": True, "parallel_attn": True, "bias": False}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert get_model(str(tmp_path)).params() == m.params()


def test_falcon_40b_grouped_kv_heads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["tiiuae/falcon-40b"][0]))
    m = get_model(str(tmp_path))
    assert m.kv_heads == 8 and m.norms_per_layer == 2


def test_deepseek_moe_active_parameters(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["deepseek-ai/deepseek-moe-16b-base"][0]))
    m = get_model(str(tmp_path))
    assert m.dense_layers == 1 and m.shared_intermediate == 2 * 1408
    assert m.params(active=True) == pytest.approx(2.8e9, rel=0.03)  # model card: 2.8 B activated


def test_family_defaults_fill_what_the_config_omits(tmp_path):
    """transformers' config classes: Gemma ties, GPT-NeoX does not; a Gemma config without sizes is Gemma-7B."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    g = get_model(str(tmp_path))
    assert g.tied and g.params() == pytest.approx(8.54e9, rel=0.01)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    n = get_model(str(tmp_path))
    assert not n.tied and n.params() == pytest.approx(20.6e9, rel=0.01)

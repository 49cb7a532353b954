"""Hardware and model catalogues: sources, dense peaks, user additions, exact parameter counts."""

from __future__ import annotations

import json

import pytest
import yaml

from thresher.capacity.hardware import catalogue, get_gpu
from thresher.capacity.models import Model, get_model
from thresher.capacity.models import catalogue as models
from thresher.pipeline.errors import ThresherError

REQUIRED_GPUS = {"a100-40gb-sxm", "a100-80gb-sxm", "a100-40gb-pcie", "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200",
                 "l4", "l40s", "a10g", "rtx-4090", "mi300x"}


def test_every_required_gpu_is_there_with_sources():
    cat = catalogue()
    assert set(cat) >= REQUIRED_GPUS
    for g in cat.values():
        assert g.source and g.price_source and g.price_per_hour > 0
        assert {"fp32", "bf16"} <= set(g.flops) and g.bandwidth > 0 and g.memory_bytes > 0


def test_peaks_are_dense_not_sparse():
    """Vendors headline the 2:4-sparsity figure; the planner must use the dense one (half of it)."""
    assert get_gpu("h100-sxm").peak("bf16") == pytest.approx(989.5e12)  # 1,979 with sparsity
    assert get_gpu("a100-80gb-sxm").peak("bf16") == pytest.approx(312e12)  # 624 with sparsity
    assert get_gpu("l4").peak("fp8") == pytest.approx(242.5e12)  # 485 with sparsity
    # a dtype without a tensor path runs on the next wider one: fp8 on an A100 is bf16 speed
    assert get_gpu("a100-40gb-sxm").peak("fp8") == get_gpu("a100-40gb-sxm").peak("bf16")


def test_user_hardware_yaml_adds_a_part(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"my-gpu": {"flops": {"fp32": 10, "bf16": 100}, "memory_gb": 32,
                                            "memory_bandwidth_gbs": 1000, "price_per_hour": 0.5}}))
    g = get_gpu("my-gpu", [str(f)])
    assert g.peak("bf16") == 100e12 and g.memory_bytes == 32 * 2**30 and g.price_per_hour == 0.5
    assert get_gpu("l4", price=0.1).price_per_hour == 0.1


def test_unknown_gpu_lists_known_and_closest():
    with pytest.raises(ThresherError) as e:
        get_gpu("h100-sx")
    assert "Did you mean 'h100-sxm'" in str(e.value) and "mi300x" in str(e.value)


@pytest.mark.parametrize("name", sorted(models()))
def test_parameter_counts_match_the_official_ones(name):
    """official_params: each model card's safetensors total (Hugging Face repo named in models.yaml)."""
    m = get_model(name)
    assert m.official_params
    assert m.params() == pytest.approx(m.official_params, rel=0.005)


def test_moe_active_and_total():
    m = get_model("mixtral-8x7b")
    assert m.params() == pytest.approx(46.7e9, rel=0.005)
    assert m.params(active=True) == pytest.approx(m.official_active_params, rel=0.005)  # ~12.9 B
    assert m.params(active=True) < m.params() / 3


def test_any_hf_config_json(tmp_path):
    """Qwen2.5-7B's config.json as published (the fields that matter): GQA, qkv bias, untied head."""
    cfg = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = get_model(str(tmp_path))
    assert m.params() == pytest.approx(7_615_616_512, rel=0.005)
    # MPT-7B's config uses other field names and a plain (non-gated) MLP: 6.7 B (MosaicML model card)
    mpt = Model.from_config("mpt-7b", {"model_type": "mpt", "d_model": 4096, "n_layers": 32, "n_heads": 32,
                                       "expansion_ratio": 4, "vocab_size": 50432, "max_seq_len": 2048})
    assert mpt.params() == pytest.approx(6.7e9, rel=0.01) and not mpt.gated_mlp


def test_unknown_model_and_bad_config(tmp_path):
    with pytest.raises(ThresherError, match="Did you mean 'llama-3-8b'"):
        get_model("llama3-8b")
    bad = tmp_path / "config.json"
    bad.write_text("{nope")
    with pytest.raises(ThresherError, match="not valid JSON"):
        get_model(str(bad))
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ThresherError, match="lacks"):
        get_model(str(bad))

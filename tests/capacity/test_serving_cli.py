"""`thresher plan` CLI: every invalid number or incompatible combination is a one-line error, the
catalogue listings, LoRA short names; the serving model's vLLM memory (non-torch memory that grows
with TP, FP8 KV, 'cannot load'), max-throughput mode; roofline charts (calibrated points below the
roof, labels that never overlap, a real training-step roofline)."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from thresher.capacity.hardware import get_gpu
from thresher.capacity.models import get_model
from thresher.capacity.roofline import CALIBRATED, Precision, forward, training_step
from thresher.capacity.serving import ServeInputs, kv_cache_blocks, non_torch_bytes, plan_serving
from thresher.capacity.stats import LengthStats
from thresher.pipeline.cli import main

A100 = get_gpu("a100-80gb-sxm")
L2_7, L2_70 = get_model("llama-2-7b"), get_model("llama-2-70b")
SERVE = ["plan", "serve", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm"]
TRAIN = ["plan", "train", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--tokens", "900", "--method", "lora",
         "--zero", "0", "--recompute", "none"]


def _inputs(**kw) -> ServeInputs:
    return ServeInputs(prompt=LengthStats.constant(512), output=LengthStats.constant(256), **kw)


@pytest.mark.parametrize("argv", [
    [*SERVE, "--rate", "0"],
    [*SERVE, "--output-len", "0"],
    [*SERVE, "--prompt-len", "0"],
    [*SERVE, "--block-size", "7"],
    [*SERVE, "--gpu-memory-utilization", "1.5"],
    [*SERVE, "--max-num-seqs", "0"],
    [*SERVE, "--tp", "3"],
    [*SERVE, "--max-model-len", "100000"],
    [*SERVE, "--price", "-1"],
    [*SERVE, "--tpot", "0ms"],
    ["plan", "serve", "--model", "llama-2-70b", "--gpu", "a100-80gb-sxm", "--tp", "3"],
    [*TRAIN, "--gpus", "3", "--tp", "2"],
    ["plan", "train", "--model", "llama-2-70b", "--tokens", "900", "--tp", "3"],
    [*TRAIN, "--micro-batch", "0"],
    [*TRAIN, "--lora-rank", "0"],
    [*TRAIN, "--lora-targets", "q,bogus"],
    [*TRAIN, "--epochs", "0"],
    [*TRAIN, "--global-batch", "10", "--micro-batch", "4"],
    ["plan", "roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--tp", "3"],
])
def test_invalid_input_is_one_line_error(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "internal error" not in err


def test_lora_short_targets_and_listings(capsys):
    assert main([*TRAIN, "--gpus", "1", "--lora-targets", "q,v", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plans"]
    assert main([*TRAIN, "--gpus", "1", "--lora-targets", "all-linear", "--json"]) == 0
    capsys.readouterr()
    assert main(["plan", "models", "--json"]) == 0
    assert "llama-2-70b" in {r["model"] for r in json.loads(capsys.readouterr().out)}
    assert main(["plan", "gpus", "--json"]) == 0
    assert "a100-80gb-sxm" in {r["gpu"] for r in json.loads(capsys.readouterr().out)}
    with pytest.raises(SystemExit):
        main(["plan", "serve", "--help"])
    helptext = capsys.readouterr().out
    assert "plan models" in helptext and "--list" not in helptext


def test_vllm_blocks_llama2_70b_tp4():
    """vLLM PR #2031 (github.com/vllm-project/vllm/pull/2031, Dec 2023) logs "# GPU blocks: 20865"
    for Llama-2-70B at TP 4 on 4x A100-80GB (block size 16, gpu_memory_utilization 0.9), and 7351
    for Llama-2-7B at TP 1: both within 10% (the fixed 0.6 GiB non-torch memory gave 31k, 1.5x)."""
    blocks, mem = kv_cache_blocks(L2_70, A100, _inputs(tp=4))
    assert blocks == pytest.approx(20865, rel=0.10)
    assert kv_cache_blocks(L2_7, A100, _inputs())[0] == pytest.approx(7351, rel=0.10)
    assert non_torch_bytes(L2_70, 4) > non_torch_bytes(L2_70, 2) > non_torch_bytes(L2_70, 1)
    # a larger block size holds the same tokens in fewer blocks
    b32, _ = kv_cache_blocks(L2_7, A100, _inputs(block_size=32))
    assert b32 == pytest.approx(kv_cache_blocks(L2_7, A100, _inputs())[0] / 2, abs=1)


def test_fp8_kv_doubles_blocks(capsys):
    b16, _ = kv_cache_blocks(L2_7, A100, _inputs())
    b8, _ = kv_cache_blocks(L2_7, A100, _inputs(precision=Precision(16, 16, 8)))
    assert b8 == pytest.approx(2 * b16, abs=2)
    assert main([*SERVE, "--kv-cache-dtype", "fp8", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)["plans"][0]
    assert p["kv_bits"] == 8 and p["kv_blocks"] == pytest.approx(2 * b16, abs=2)


def test_max_throughput_mode(capsys):
    slo = plan_serving(L2_7, A100, _inputs(tpot_s=0.02))
    thr = plan_serving(L2_7, A100, _inputs(tpot_s=0.02, objective="throughput"))
    assert thr.meets_slo and thr.batch == thr.max_concurrent  # memory-bound: every request the KV cache holds
    assert thr.batch > slo.batch and thr.tokens_per_s > slo.tokens_per_s
    assert main([*SERVE, "--max-throughput", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)["plans"][0]
    assert p["objective"] == "throughput" and p["batch"] == p["max_concurrent"]


def test_decode_efficiency_and_chunked_prefill():
    one = plan_serving(L2_7, A100, _inputs(rate=10))
    steps = list(one.decode_ms_by_batch.values())
    assert steps == sorted(steps)  # a bigger batch never decodes faster
    serial = plan_serving(L2_7, A100, _inputs(rate=10, chunked_prefill=False))
    assert one.meets_slo and serial.meets_slo and one.ttft_ms_p95 > 0


def test_cannot_load_says_what_would(capsys):
    p = plan_serving(get_model("llama-3-70b"), A100, _inputs())
    assert not p.loadable and "cannot load" in p.note and "TP 4" in p.fits_instead and p.tpot_ms == 0
    assert main(["plan", "serve", "--model", "llama-3-70b", "--gpu", "a100-80gb-sxm"]) == 1
    out = capsys.readouterr().out
    assert "cannot load" in out and "Would load" in out


def test_train_no_fit_json_carries_closest_memory(capsys):
    rc = main(["plan", "train", "--model", "llama-3-70b", "--gpu", "l4", "--tokens", "900", "--gpus", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["closest"]["memory"]["total"] > out["closest"]["memory"]["capacity"]
    assert "Closest" in out["why"]


def test_chart_paths_printed(tmp_path, capsys):
    assert main(["plan", "roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb-sxm", "--chart", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"chart: {tmp_path}/roofline.png" in out and (tmp_path / "roofline.svg").is_file()


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("mode", ["ideal", "calibrated"])
def test_roofline_labels_never_overlap_and_points_in_mode(mode, training):
    from thresher.capacity.charts import roofline_figure

    fig = roofline_figure(L2_7, A100, 16, 1024, mode=mode, training=training)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(r) for t in ax.texts]
    assert boxes and not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    peak, bw = A100.peak("bf16"), A100.bandwidth
    for coll in ax.collections:
        for xv, yv in coll.get_offsets():
            roof = min(peak, bw * xv)
            if mode == "ideal":
                assert yv == pytest.approx(roof, rel=1e-6)
            else:
                assert yv <= roof * max(CALIBRATED.compute, CALIBRATED.memory) * 1.0001
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_training_step_is_forward_and_backward():
    step = training_step(L2_7, A100, 1, 2048)
    fwd, bwd = step["forward"], step["backward"]
    assert fwd.flops == pytest.approx(2 * L2_7.params() * 2048, rel=0.10)  # every token through every weight
    assert bwd.flops == pytest.approx(2 * fwd.flops, rel=0.05)  # dX and dW: the 6N of a training step
    assert any(o.name.endswith(" dW") for o in bwd.ops)
    inference = forward(L2_7, A100, "prefill", 1, 2048)
    assert fwd.flops > inference.flops  # the LM head on every position, not only the last


def test_serve_memory_chart_legend_clear_of_bars():
    from thresher.capacity.charts import _serve_memory_fig

    p = plan_serving(L2_7, A100, _inputs())
    fig = _serve_memory_fig([p, dataclasses.replace(p, gpu="other")])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    leg = ax.get_legend().get_window_extent(r)
    assert not any(leg.overlaps(b.get_window_extent(r)) for b in ax.patches)
    import matplotlib.pyplot as plt

    plt.close(fig)

"""The capacity planner against published figures (the same checks the tests make, as a table).

    python bench/capacity_validation.py

Prints a markdown table for docs/benchmarks.md: LLM-Viewer's Llama-2-7B latencies, vLLM's KV
blocks, MPT-7B's MFU, FLM-101B's GPU-hours, and every catalogue model's parameter count.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.capacity.hardware import get_gpu  # noqa: E402
from thresher.capacity.models import Model, catalogue, get_model  # noqa: E402
from thresher.capacity.roofline import IDEAL, forward  # noqa: E402
from thresher.capacity.serving import ServeInputs, kv_cache_blocks  # noqa: E402
from thresher.capacity.stats import LengthStats  # noqa: E402
from thresher.capacity.training import gpu_hours, mfu  # noqa: E402


def main() -> None:
    rows = []
    l7, a40 = get_model("llama-2-7b"), get_gpu("a100-40gb-sxm")
    pre = forward(l7, a40, "prefill", 1, 1024, eff=IDEAL, flash=False).time * 1e3
    dec = forward(l7, a40, "decode", 1, 1024, eff=IDEAL, flash=False).time * 1e3
    rows += [("Llama-2-7B prefill, A100-40GB, b=1, s=1024 (ideal)", "LLM-Viewer", 50.8, pre, "ms", "10%"),
             ("Llama-2-7B decode/token, same", "LLM-Viewer", 8.9, dec, "ms", "10%")]
    blocks, _ = kv_cache_blocks(l7, get_gpu("a100-80gb-sxm"),
                                ServeInputs(prompt=LengthStats.constant(512), output=LengthStats.constant(256)))
    rows.append(("Llama-2-7B KV blocks, A100-80GB, util 0.9", "vLLM (measured)", 7351, blocks, "blocks", "2%"))
    mpt = Model.from_config("mpt-7b", {"model_type": "mpt", "d_model": 4096, "n_layers": 32, "n_heads": 32,
                                       "expansion_ratio": 4, "vocab_size": 50432, "max_seq_len": 2048})
    rows.append(("MPT-7B MFU at 4,641 tok/s/GPU, 8xA100-80GB", "MosaicML", 64.0,
                 100 * mfu(4641, mpt, 2048, get_gpu("a100-80gb-sxm").peak("bf16")), "%", "1.5 points"))
    rows.append(("FLM-101B: 192 GPUs x 21.54 days", "Li et al. 2023", 99_000, gpu_hours(192, 21.54), "GPU-h", "1%"))
    for key, m in catalogue().items():
        rows.append((f"{key} parameters", "model card", m.official_params / 1e9, m.params() / 1e9, "B", "0.5%"))
    print("| check | reference | published | thresher | unit | tolerance | ratio |\n|---|---|---|---|---|---|---|")
    for name, src, ref, ours, unit, tol in rows:
        print(f"| {name} | {src} | {ref:,.4g} | {ours:,.4g} | {unit} | {tol} | {ours / ref:.3f} |")
    mix = get_model("mixtral-8x7b")
    print(f"\nMixtral-8x7B active parameters: {mix.params(active=True) / 1e9:.3f} B "
          f"(model card {mix.official_active_params / 1e9:.3f} B)")


if __name__ == "__main__":
    main()

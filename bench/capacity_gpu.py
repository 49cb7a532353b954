"""Measured ground truth for the capacity planner, on a CUDA GPU (H100-class).

    pip install torch transformers peft && python bench/capacity_gpu.py --gpu h100-sxm

Builds random-weight Llama-architecture models from their configs (transformers; nothing is
downloaded), measures prefill latency, decode step latency at several batch sizes, and one LoRA
training step's time and peak memory, and prints them beside the calibrated planner's predictions
as a markdown table (ratio = measured / predicted) for docs/benchmarks.md. ``--json FILE`` saves
the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capacity.hardware import get_gpu  # noqa: E402
from capacity.models import Model, get_model  # noqa: E402
from capacity.roofline import CALIBRATED, forward  # noqa: E402
from capacity.stats import LengthStats  # noqa: E402
from capacity.training import TrainInputs, memory, plan_training  # noqa: E402

GIB = 1 << 30


def hf_config(m: Model):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=m.hidden, intermediate_size=m.intermediate, num_hidden_layers=m.layers,
                       num_attention_heads=m.heads, num_key_value_heads=m.kv_heads, head_dim=m.head_dim,
                       vocab_size=m.vocab, tie_word_embeddings=m.tied, max_position_embeddings=max(8192, m.max_position),
                       attn_implementation="sdpa", torch_dtype="bfloat16")


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after one warm-up, with CUDA synchronisation."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure_inference(m: Model, prompt: int, batches: list[int]) -> dict:
    import torch
    from transformers import DynamicCache, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(hf_config(m)).to(torch.bfloat16).eval()
    out = {"prefill_s": None, "decode_s": {}}
    ids = torch.randint(0, m.vocab, (1, prompt), device="cuda")
    with torch.inference_mode():
        out["prefill_s"] = timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1))
        for b in batches:
            ids_b = torch.randint(0, m.vocab, (b, prompt), device="cuda")
            cache = DynamicCache()
            model(input_ids=ids_b, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = torch.randint(0, m.vocab, (b, 1), device="cuda")

            def step(cache=cache, nxt=nxt):
                model(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache.crop(prompt)  # keep the context length fixed across repeats

            out["decode_s"][b] = timed(step)
    return out  # the caller frees the model (gc + empty_cache)


def measure_lora_step(m: Model, seq: int, micro_batch: int, rank: int, checkpointing: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(hf_config(m)).to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                     "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, m.vocab, (micro_batch, seq), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.reset_peak_memory_stats()
    t = timed(step, repeat=3)
    return {"step_s": t, "peak_bytes": torch.cuda.max_memory_allocated()}


def free() -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="h100-sxm", help="catalogue key of the GPU this runs on")
    ap.add_argument("--models", default="llama-2-7b,llama-3-8b")
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    gpu = get_gpu(args.gpu)
    batches = [int(b) for b in args.batches.split(",")]
    rows, raw = [], {"device": torch.cuda.get_device_name(0), "gpu": gpu.key, "models": {}}
    for name in args.models.split(","):
        m = get_model(name)
        inf = measure_inference(m, args.prompt, batches)
        free()
        pred = forward(m, gpu, "prefill", 1, args.prompt, eff=CALIBRATED).time
        rows.append((name, f"prefill b=1 s={args.prompt}", inf["prefill_s"] * 1e3, pred * 1e3, "ms"))
        for b in batches:
            pred = forward(m, gpu, "decode", b, args.prompt, eff=CALIBRATED).time
            rows.append((name, f"decode step b={b} ctx={args.prompt}", inf["decode_s"][b] * 1e3, pred * 1e3, "ms"))
        t = TrainInputs(data=LengthStats.constant(args.seq, 1), max_len=args.seq, method="lora", micro_batch=1,
                        global_batch=1, gpus=1)
        for ckpt in (False, True):
            lora = measure_lora_step(m, args.seq, 1, t.lora_rank, ckpt)
            free()
            ti = TrainInputs(**{**t.__dict__, "recompute": "full" if ckpt else "none"})
            plan = plan_training(m, gpu, ti)
            mem = memory(m, gpu, ti)
            label = "LoRA r=16 step" + (" + checkpointing" if ckpt else "")
            rows.append((name, f"{label}, 1x{args.seq} tokens", lora["step_s"], plan.step_s, "s"))
            rows.append((name, f"{label}: peak allocated", lora["peak_bytes"] / GIB,
                         (mem.total - mem.reserve) / GIB, "GiB"))
            raw["models"].setdefault(name, {})[label] = lora
        raw["models"].setdefault(name, {})["inference"] = inf
    print(f"device: {raw['device']} (planner: {gpu.key}, calibrated mode)\n")
    print("| model | measurement | measured | planner | unit | measured / planner |\n|---|---|---|---|---|---|")
    for name, what, meas, pred, unit in rows:
        print(f"| {name} | {what} | {meas:.3g} | {pred:.3g} | {unit} | {meas / pred:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Measured ground truth for the capacity planner, on a CUDA GPU (H100-class).

    pip install torch transformers peft && python bench/capacity_gpu.py --gpu h100-sxm --json gpu.json

Builds random-weight Llama-architecture models from their configs (transformers; nothing is
downloaded), measures prefill latency, decode step latency at several batch sizes, and one LoRA
training step's time and peak memory, and prints them beside the calibrated planner's predictions
as a markdown table (ratio = measured / predicted) for docs/benchmarks.md.

A decode step is measured two ways, at the same batches and context length:

- ``(eager)``: plain PyTorch with a growing ``DynamicCache`` (cropped back by one token after each
  step). Every step launches each kernel from Python and copies the whole cache (``torch.cat``), so at
  small batch it measures launch overhead, not the GPU.
- ``(CUDA graph, static cache)``: a preallocated ``StaticCache`` exactly one token longer than the
  prompt, explicit positions, and the one-token step captured in a ``torch.cuda.CUDAGraph`` and
  replayed: what a serving engine (vLLM: CUDA graphs, preallocated paged KV cache) runs, and what the
  planner models. Two attention paths (``--graph-attn``): ``sdpa``, transformers' own (a mask over the
  static cache; grouped-query K/V repeated to all heads), and ``nomask``, SDPA over exactly the
  context with native GQA and no mask, which is what a paged-attention decode kernel reads.

Each model and measurement is tried on its own: a failure prints one ``ERROR`` line and the run goes
on. ``--only`` and ``--models`` limit a run; ``--json FILE`` saves the raw numbers (rewritten after
every measurement, so a run cut short keeps what it measured); ``--time-budget S`` skips what would
start after S seconds. ``--cpu-smoke`` checks the code paths on the CPU with a tiny model (no GPU:
the CUDA graph itself is not captured there, its step function runs eagerly).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thresher.capacity.hardware import get_gpu  # noqa: E402
from thresher.capacity.models import Model, get_model  # noqa: E402
from thresher.capacity.roofline import CALIBRATED, forward  # noqa: E402
from thresher.capacity.stats import LengthStats  # noqa: E402
from thresher.capacity.training import TrainInputs, memory, plan_training  # noqa: E402

GIB = 1 << 30
PARTS = ("prefill", "decode-eager", "decode-graph", "lora")
GRAPH_ATTNS = ("sdpa", "nomask")
NOMASK_ATTN = "thresher_nomask_sdpa"  # the name the no-mask attention is registered under
GRAPH_LABEL = {"sdpa": "CUDA graph, static cache", "nomask": "CUDA graph, static cache, no-mask GQA SDPA"}
# the tiny model --cpu-smoke runs (grouped-query attention, so both GQA paths are exercised)
TINY = Model(key="tiny-llama", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=256,
             tied=False)


def hf_config(m: Model, dtype: str = "bfloat16"):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=m.hidden, intermediate_size=m.intermediate, num_hidden_layers=m.layers,
                       num_attention_heads=m.heads, num_key_value_heads=m.kv_heads, head_dim=m.head_dim,
                       vocab_size=m.vocab, tie_word_embeddings=m.tied, max_position_embeddings=max(8192, m.max_position),
                       attn_implementation="sdpa", dtype=dtype)


def sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after one warm-up, with CUDA synchronisation."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def build_model(m: Model, device: str, dtype):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(hf_config(m, str(dtype).removeprefix("torch."))).to(dtype)


# ------------------------------------------------------------------------------------------ decode


def nomask_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs):
    """SDPA over the whole preallocated cache with no mask and native GQA (no K/V repeat): what a
    paged-attention decode kernel reads. Only valid when the cache holds exactly the context: a decode
    step that fills the static cache's last slot, or a prefill from position 0 (causal over its own
    slots)."""
    import torch.nn.functional as F

    q_len = query.shape[2]
    if q_len > 1:
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=q_len > 1, scale=scaling,
                                         enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register_nomask_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NOMASK_ATTN, nomask_attention)


def set_attention(model, attn: str) -> None:
    model.set_attn_implementation(NOMASK_ATTN if attn == "nomask" else "sdpa")


def make_static_cache(model, batch: int, max_len: int, device, dtype):
    """A ``StaticCache`` of ``max_len`` tokens. transformers 5.x sizes its batch at the first update
    (the prefill) and takes only config and length; 4.x took batch, device and dtype here."""
    from transformers import StaticCache

    params = inspect.signature(StaticCache.__init__).parameters
    kw: dict[str, Any] = {"config": model.config, "max_cache_len": max_len}
    for name, value in (("max_batch_size", batch), ("batch_size", batch), ("device", device), ("dtype", dtype)):
        if name in params:
            kw[name] = value
    return StaticCache(**kw)


def cache_counters(cache) -> list:
    """The device-side write positions of a transformers 5.x static cache (``StaticLayer.cumulative_length``:
    each ``update`` writes there and adds the new tokens' count in place)."""
    import torch

    return [c for layer in getattr(cache, "layers", []) if isinstance(c := getattr(layer, "cumulative_length", None),
                                                                       torch.Tensor)]


def takes_cache_position() -> bool:
    """transformers 4.x's Llama took ``cache_position`` (the slots to write); 5.x dropped it (positions
    come from ``position_ids``, slots from the cache's own counters)."""
    from transformers.models.llama.modeling_llama import LlamaModel

    return "cache_position" in inspect.signature(LlamaModel.forward).parameters


def static_decode_step(model, cache, prompt: int, nxt, device) -> Callable:
    """The one-token decode step on a static cache holding ``prompt`` tokens: writes the new token's K/V
    into slot ``prompt`` and attends over ``prompt + 1`` keys. Each call first sets the cache's write
    counters back to ``prompt`` (inside the graph when captured), so every replay decodes at the same
    context length and never writes past the cache."""
    import torch

    b = nxt.shape[0]
    pos = torch.full((b, 1), prompt, dtype=torch.long, device=device)
    counters = cache_counters(cache)
    extra = {}
    if takes_cache_position():
        extra["cache_position"] = torch.tensor([prompt], dtype=torch.long, device=device)
    elif not counters:
        raise RuntimeError("this transformers' StaticCache has neither cache_position nor per-layer counters")

    def step():
        for c in counters:
            c.fill_(prompt)
        return model(input_ids=nxt, position_ids=pos, past_key_values=cache, use_cache=True, **extra).logits

    return step


def prefill_static(model, m: Model, batch: int, prompt: int, device, dtype):
    """A static cache of ``prompt + 1`` slots, prefilled with ``prompt`` random tokens per sequence."""
    import torch

    cache = make_static_cache(model, batch, prompt + 1, device, dtype)
    ids = torch.randint(0, m.vocab, (batch, prompt), device=device)
    extra = {"cache_position": torch.arange(prompt, device=device)} if takes_cache_position() else {}
    model(input_ids=ids, position_ids=torch.arange(prompt, device=device).expand(batch, -1), past_key_values=cache,
          use_cache=True, logits_to_keep=1, **extra)
    return cache


def capture_graph(fn: Callable, warmup: int = 3):
    """``fn`` captured in a CUDA graph after ``warmup`` runs on a side stream; returns the graph and
    ``fn``'s (static) output, which every ``graph.replay()`` rewrites."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def retry_without_cudnn(step: Callable):
    """``capture_graph(step)`` with SDPA limited to the flash, memory-efficient and math kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        return capture_graph(step)


def measure_prefill(model, m: Model, prompt: int, device) -> float:
    import torch

    ids = torch.randint(0, m.vocab, (1, prompt), device=device)
    with torch.inference_mode():
        return timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1))


def measure_decode_eager(model, m: Model, prompt: int, b: int, device) -> float:
    """Eager decode step with a ``DynamicCache``, cropped back to ``prompt`` tokens after each step."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        ids_b = torch.randint(0, m.vocab, (b, prompt), device=device)
        cache = DynamicCache()
        model(input_ids=ids_b, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = torch.randint(0, m.vocab, (b, 1), device=device)

        def step():
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
            cache.crop(-1)  # drop the token just added: the context stays at `prompt` across repeats

        t = timed(step)
        if cache.get_seq_length() != prompt:
            raise RuntimeError(f"eager cache holds {cache.get_seq_length()} tokens after the steps, not {prompt}")
        return t


def measure_decode_graph(model, m: Model, prompt: int, b: int, device, dtype, attns: list[str], use_graph: bool,
                         repeat: int, on_error: Callable[[str, BaseException], None]) -> dict:
    """Decode step on a static cache, per attention path: captured in a CUDA graph and replayed
    (``use_graph``), else (CPU smoke) the same step function run eagerly. Also records the largest
    |logit| difference between the graph's output and the same step run eagerly (0 expected), and
    between the two attention paths' eager outputs (bf16 rounding expected)."""
    import torch

    out: dict[str, Any] = {"step_s": {}, "graph_vs_eager_max_abs": {}}
    refs = {}
    with torch.inference_mode():
        try:
            set_attention(model, "sdpa")
            cache = prefill_static(model, m, b, prompt, device, dtype)
            nxt = torch.randint(0, m.vocab, (b, 1), device=device)
            step = static_decode_step(model, cache, prompt, nxt, device)
            for attn in attns:
                try:
                    set_attention(model, attn)
                    ref = step().float()
                    refs[attn] = ref
                    if use_graph:
                        try:
                            graph, logits = capture_graph(step)
                        except Exception as e:  # e.g. an attention backend that cannot be captured
                            on_error(f"{attn} (retrying without cuDNN attention)", e)
                            graph, logits = retry_without_cudnn(step)
                            out.setdefault("retried_without_cudnn", []).append(attn)
                        graph.replay()
                        sync()
                        out["graph_vs_eager_max_abs"][attn] = (logits.float() - ref).abs().max().item()
                        out["step_s"][attn] = timed(graph.replay, repeat)
                        del graph, logits
                    else:
                        out["step_s"][attn] = timed(step, repeat)
                    if counters := cache_counters(cache):
                        got = int(counters[0].item())
                        if got != prompt + 1:
                            raise RuntimeError(f"cache counter at {got} after the steps, not {prompt + 1}")
                except Exception as e:  # one attention path failing must not lose the other
                    on_error(attn, e)
            if len(refs) == 2:
                out["sdpa_vs_nomask_max_abs"] = (refs["sdpa"] - refs["nomask"]).abs().max().item()
        finally:
            set_attention(model, "sdpa")
    return out


# -------------------------------------------------------------------------------------------- LoRA


def measure_lora_step(m: Model, seq: int, micro_batch: int, rank: int, checkpointing: bool, device, dtype) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    model = build_model(m, device, dtype)
    if checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                     "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, m.vocab, (micro_batch, seq), device=device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = timed(step, repeat=3)
    return {"step_s": t, "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ runner


class Run:
    """Rows, raw numbers and errors of one run; each measurement goes through ``attempt``."""

    def __init__(self, args, gpu, raw: dict):
        self.args, self.gpu, self.raw = args, gpu, raw
        self.t0 = time.perf_counter()
        self.rows: list[tuple[str, str, float, float | None, str]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def error(self, model: str, what: str, e: BaseException) -> None:
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
        msg = " ".join(str(e).split())[:300]
        print(f"ERROR {model}: {what}: {type(e).__name__}: {msg}{where}", flush=True)
        self.raw["errors"].append({"model": model, "what": what, "error": f"{type(e).__name__}: {e}",
                                   "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))})
        self.dump()

    def attempt(self, model: str, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None after printing one line if it raised or the time budget is spent."""
        budget = self.args.time_budget
        if budget and self.elapsed() > budget:
            print(f"SKIP {model}: {what}: time budget of {budget:g} s spent", flush=True)
            self.raw["skipped"].append({"model": model, "what": what})
            return None
        result = None
        try:
            result = fn()
        except Exception as e:  # report and go on with the other measurements
            self.error(model, what, e)
        free()  # outside the except block: the traceback's frames (and their tensors) are gone by now
        return result

    def row(self, model: str, what: str, measured: float, predict: Callable[[], float], unit: str, scale: float) -> None:
        try:
            pred = predict() * scale
        except Exception as e:
            self.error(model, f"planner for {what}", e)
            pred = None
        self.rows.append((model, what, measured * scale, pred, unit))
        ratio = f"{measured * scale / pred:.2f}x" if pred else "n/a"
        pred_s = f"{pred:.3g}" if pred is not None else "n/a"
        print(f"[{self.elapsed():6.1f}s] {model} | {what} | measured {measured * scale:.3g} {unit} | planner {pred_s} "
              f"| {ratio}", flush=True)
        self.raw["rows"].append({"model": model, "measurement": what, "measured": measured * scale, "planner": pred,
                                 "unit": unit, "ratio": measured * scale / pred if pred else None})
        self.dump()

    def dump(self) -> None:
        if not self.args.json:
            return
        self.raw["elapsed_s"] = round(self.elapsed(), 2)
        tmp = self.args.json.with_name(self.args.json.name + ".tmp")
        tmp.write_text(json.dumps(self.raw, indent=2, default=str))
        os.replace(tmp, self.args.json)

    def table(self) -> None:
        print(f"\ndevice: {self.raw['device']} (planner: {self.gpu.key}, calibrated mode; "
              f"{self.elapsed():.0f} s, {len(self.raw['errors'])} errors)\n")
        print("| model | measurement | measured | planner | unit | measured / planner |\n|---|---|---|---|---|---|")
        for name, what, meas, pred, unit in self.rows:
            ratio = f"{meas / pred:.2f}" if pred else "n/a"
            pred_s = f"{pred:.3g}" if pred is not None else "n/a"
            print(f"| {name} | {what} | {meas:.3g} | {pred_s} | {unit} | {ratio} |")


def run_model(run: Run, m: Model, name: str, device, dtype, parts: set[str], use_graph: bool) -> None:
    args, gpu = run.args, run.gpu
    prompt, batches = args.prompt, args.batches
    res = run.raw["models"].setdefault(name, {})
    inf = res.setdefault("inference", {"prefill_s": None, "decode_s": {}, "decode_graph_s": {}, "graph_checks": {}})
    if parts & {"prefill", "decode-eager", "decode-graph"}:
        model = run.attempt(name, "build model", lambda: build_model(m, device, dtype).eval())
        if model is not None:
            if "prefill" in parts:
                t = run.attempt(name, "prefill", lambda: measure_prefill(model, m, prompt, device))
                if t is not None:
                    inf["prefill_s"] = t
                    run.row(name, f"prefill b=1 s={prompt}", t,
                            lambda: forward(m, gpu, "prefill", 1, prompt, eff=CALIBRATED).time, "ms", 1e3)

            def pred_decode(b):
                return lambda: forward(m, gpu, "decode", b, prompt, eff=CALIBRATED).time

            for b in batches:
                if "decode-eager" in parts:
                    t = run.attempt(name, f"decode eager b={b}",
                                    lambda b=b: measure_decode_eager(model, m, prompt, b, device))
                    if t is not None:
                        inf["decode_s"][b] = t
                        run.row(name, f"decode step b={b} ctx={prompt} (eager)", t, pred_decode(b), "ms", 1e3)
                if "decode-graph" in parts:
                    what = f"decode graph b={b}"

                    def on_error(attn: str, e: BaseException, what: str = what) -> None:
                        run.error(name, f"{what} attn={attn}", e)

                    g = run.attempt(name, what, lambda b=b, on_error=on_error: measure_decode_graph(
                        model, m, prompt, b, device, dtype, args.graph_attn, use_graph, args.graph_repeat, on_error))
                    if g is not None:
                        checks = {k: v for k, v in g.items() if k != "step_s"}
                        inf["graph_checks"][b] = checks
                        for attn, t in g["step_s"].items():
                            inf["decode_graph_s"].setdefault(attn, {})[b] = t
                            label = GRAPH_LABEL[attn] if use_graph else f"static cache, {attn}, no graph: CPU smoke"
                            run.row(name, f"decode step b={b} ctx={prompt} ({label})", t, pred_decode(b), "ms", 1e3)
                        if checks:
                            print(f"           checks: {json.dumps(checks)}", flush=True)
            del model
            free()
    if "lora" in parts:
        t = TrainInputs(data=LengthStats.constant(args.seq, 1), max_len=args.seq, method="lora", micro_batch=1,
                        global_batch=1, gpus=1)
        for ckpt in (False, True):
            label = "LoRA r=16 step" + (" + checkpointing" if ckpt else "")
            lora = run.attempt(name, label, lambda ckpt=ckpt: measure_lora_step(m, args.seq, 1, t.lora_rank, ckpt,
                                                                                device, dtype))
            if lora is None:
                continue
            res[label] = lora
            ti = TrainInputs(**{**t.__dict__, "recompute": "full" if ckpt else "none"})
            run.row(name, f"{label}, 1x{args.seq} tokens", lora["step_s"], lambda ti=ti: plan_training(m, gpu, ti).step_s,
                    "s", 1.0)
            if lora["peak_bytes"] is not None:
                def pred_mem(ti=ti):
                    mem = memory(m, gpu, ti)
                    return mem.total - mem.reserve
                run.row(name, f"{label}: peak allocated", lora["peak_bytes"], pred_mem, "GiB", 1 / GIB)
    run.dump()


# -------------------------------------------------------------------------------------- CPU smoke


def smoke_checks() -> None:
    """CPU checks of what the GPU run relies on, with the tiny model in float32: the eager step's crop
    keeps the context; the static-cache step (both attention paths) gives the dynamic cache's logits,
    repeatably, and leaves the counters where the next replay expects them; and, with transformers made
    to believe a CUDA stream is capturing, the step makes no host synchronisation (``.item()``,
    ``nonzero``, ...), which a CUDA graph capture would refuse."""
    from unittest import mock

    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import AttentionInterface, DynamicCache

    m, P, B = TINY, 12, 2
    model = build_model(m, "cpu", torch.float32).eval()
    ids = torch.randint(0, m.vocab, (B, P))
    nxt = torch.randint(0, m.vocab, (B, 1))
    with torch.inference_mode():
        dyn = DynamicCache()
        model(input_ids=ids, past_key_values=dyn, use_cache=True)
        want = model(input_ids=nxt, past_key_values=dyn, use_cache=True).logits
        dyn.crop(-1)
        assert dyn.get_seq_length() == P, dyn.get_seq_length()
        again = model(input_ids=nxt, past_key_values=dyn, use_cache=True).logits
        assert torch.equal(want, again), "eager step after crop(-1) differs"
        print(f"smoke: eager DynamicCache step + crop(-1): context stays {P}, repeat identical: ok")

        cache = make_static_cache(model, B, P + 1, "cpu", torch.float32)
        model(input_ids=ids, position_ids=torch.arange(P).expand(B, -1), past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        counters = cache_counters(cache)
        assert counters and all(int(c) == P for c in counters), [int(c) for c in counters]
        step = static_decode_step(model, cache, P, nxt, "cpu")
        factories = {"arange", "full", "zeros", "ones", "empty", "scalar_tensor", "tensor", "as_tensor", "rand",
                     "randn", "randint", "linspace", "eye", "range"}
        sync_ops = {"_local_scalar_dense", "item", "nonzero", "masked_select", "unique", "_unique2", "equal",
                    "is_nonzero"}

        class Ops(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.seen: set[str] = set()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.seen.add(func.__name__.split(".")[0])
                return func(*args, **(kwargs or {}))

        class Factories(TorchFunctionMode):
            """Tensors made without a device (the dispatcher fills in cpu, so this looks at the Python
            call): host tensors on the GPU too, whose copy to the device a captured graph would freeze
            (or refuse)."""

            def __init__(self):
                super().__init__()
                self.hostside: set[str] = set()

            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if getattr(func, "__name__", "") in factories and kwargs.get("device") is None:
                    self.hostside.add(func.__name__)
                return func(*args, **kwargs)

        masks: list = []

        def counting(*a, **kw):  # the no-mask path, recording the mask transformers hands it
            masks.append(a[4])
            return nomask_attention(*a, **kw)

        AttentionInterface.register(NOMASK_ATTN, counting)
        try:
            for attn in GRAPH_ATTNS:
                set_attention(model, attn)
                masks.clear()
                outs = [step() for _ in range(3)]
                want_calls = 3 * m.layers if attn == "nomask" else 0
                assert len(masks) == want_calls and all(x is None for x in masks), (attn, len(masks), masks[:1])
                assert all(torch.equal(outs[0], o) for o in outs[1:]), f"{attn}: repeated static steps differ"
                diff = (outs[0] - want).abs().max().item()
                assert diff < 1e-4, f"{attn}: static-cache step differs from the dynamic cache's by {diff}"
                assert all(int(c) == P + 1 for c in counters), [int(c) for c in counters]
                with mock.patch.object(torch.cuda, "is_current_stream_capturing", return_value=True), Ops() as ops, \
                        Factories() as made:
                    step()
                syncs = sorted(ops.seen & sync_ops)
                assert not syncs, f"{attn}: host-synchronising ops in the step: {syncs}"
                assert not made.hostside, f"{attn}: tensors made without a device in the step: {sorted(made.hostside)}"
                print(f"smoke: static cache + {attn}: 3 steps identical, max |logit - dynamic cache| = {diff:.2e}, "
                      f"counters at {P + 1}, {len(ops.seen)} distinct ops under simulated capture, "
                      "no host sync or host-made tensor: ok")
        finally:
            set_attention(model, "sdpa")
            register_nomask_attention()


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="h100-sxm", help="catalogue key of the GPU this runs on")
    ap.add_argument("--models", default="llama-2-7b,llama-3-8b", help="comma-separated catalogue keys")
    ap.add_argument("--only", default=",".join(PARTS),
                    help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--prompt", type=int, default=1024, help="prefill length and decode context")
    ap.add_argument("--batches", default="1,8,32,64", help="decode batch sizes")
    ap.add_argument("--graph-attn", default=",".join(GRAPH_ATTNS),
                    help="attention paths for the CUDA-graph decode: sdpa (transformers' own, masked), nomask "
                         "(SDPA over exactly the context, native GQA)")
    ap.add_argument("--graph-repeat", type=int, default=20, help="timed replays per CUDA-graph decode step")
    ap.add_argument("--seq", type=int, default=2048, help="LoRA step sequence length")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="skip measurements that would start after this many seconds (0: no limit)")
    ap.add_argument("--json", type=Path, help="write the raw numbers here (after every measurement)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="check the code paths on the CPU with a tiny 2-layer model (graphs are not captured)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if bad := parts - set(PARTS):
        ap.error(f"--only: unknown part(s) {sorted(bad)}; known: {', '.join(PARTS)}")
    args.graph_attn = [a.strip() for a in args.graph_attn.split(",") if a.strip()]
    if bad := set(args.graph_attn) - set(GRAPH_ATTNS):
        ap.error(f"--graph-attn: unknown {sorted(bad)}; known: {', '.join(GRAPH_ATTNS)}")
    args.batches = [int(b) for b in args.batches.split(",")]

    import torch
    import transformers

    gpu = get_gpu(args.gpu)
    if args.cpu_smoke:
        torch.set_num_threads(1)  # a tiny model; leave the machine's other cores alone
        device, dtype, use_graph = "cpu", torch.float32, False
        args.prompt, args.seq, args.batches, args.graph_repeat = min(args.prompt, 32), min(args.seq, 64), [1, 2], 3
        models = [("tiny-llama", lambda: TINY)]
    else:
        if not torch.cuda.is_available():
            ap.error("no CUDA device (use --cpu-smoke to check the code paths on the CPU)")
        device, dtype, use_graph = "cuda", torch.bfloat16, True
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        models = [(n, lambda n=n: get_model(n)) for n in names]
    register_nomask_attention()
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    raw = {"device": torch.cuda.get_device_name(0) if use_graph else "cpu (smoke)", "gpu": gpu.key,
           "versions": versions, "args": {k: v for k, v in vars(args).items() if k != "json"}, "models": {},
           "rows": [], "errors": [], "skipped": []}
    run = Run(args, gpu, raw)
    print(f"{raw['device']}; {versions}; parts: {', '.join(p for p in PARTS if p in parts)}", flush=True)
    if args.cpu_smoke:
        run.attempt("tiny-llama", "smoke checks", smoke_checks)
    for name, get in models:
        m = run.attempt(name, "catalogue", get)
        if m is not None:
            try:
                run_model(run, m, name, device, dtype, parts, use_graph)
            except Exception as e:  # a bug outside the per-measurement guards loses one model only
                run.error(name, "run", e)
                free()
    run.table()
    run.dump()
    if args.cpu_smoke and raw["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

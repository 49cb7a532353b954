"""`thresher plan train` and `thresher plan serve`: tables for people, --json for programs, and
--chart DIR for the roofline and memory-breakdown charts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from thresher.pipeline.errors import ThresherError


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="size fine-tuning or serving for a model and the curated data")
    psub = p.add_subparsers(dest="plan_command", required=True)

    t = psub.add_parser("train", help="rank the cheapest training configurations that fit and meet the deadline")
    _common(t)
    t.add_argument("--data", help="a thresher output directory (or JSONL/Parquet files) to measure token lengths on")
    t.add_argument("--field", help="tokenize this one field as plain text (default: read the rows' shape: text, chat messages, DPO prompt/chosen/rejected, KTO prompt/completion/label)")
    t.add_argument("--chat-template", help="chat template counted in chat rows: chatml (default), llama3, llama2, mistral, gemma, none, or a tokenizer_config.json (or its folder)")
    t.add_argument("--tokens", help="instead of --data: sequence lengths, e.g. 900 or mean=900,p95=3000")
    t.add_argument("--rows", type=int, default=100_000, help="with --tokens: number of sequences")
    t.add_argument("--sample", type=int, default=None, help="tokenize an evenly spaced sample of N rows")
    t.add_argument("--tokenizer", default="cl100k_base", help="cl100k_base (offline tiktoken) or a tokenizer.json path")
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-len", type=int, default=2048)
    t.add_argument("--no-packing", action="store_true", help="pad every example to --max-len instead of packing")
    t.add_argument("--method", choices=["full", "lora", "qlora"], help="pin the method (default: consider all)")
    t.add_argument("--lora-rank", type=int, default=16)
    t.add_argument("--lora-targets", default="all", help="comma list of q_proj,k_proj,... or 'all' (every linear)")
    t.add_argument("--optimizer", choices=["adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit"], default="adamw",
                   help="paged_*: bitsandbytes paged optimizers, whose states may page out to host memory")
    t.add_argument("--adapter-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="LoRA/QLoRA adapter weights and gradients: fp32 as PEFT keeps them, bf16 as qlora.py casts them")
    t.add_argument("--no-sequence-parallel", action="store_true",
                   help="tensor parallelism without Megatron sequence parallelism (layer-norm activations unsharded)")
    t.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="pin the ZeRO stage (3 = FSDP full shard)")
    t.add_argument("--tp", type=int, help="pin the tensor parallel size (default: searched)")
    t.add_argument("--pp", type=int, help="pin the pipeline parallel size (default: searched)")
    t.add_argument("--recompute", choices=["none", "selective", "full"], help="pin activation recomputation")
    t.add_argument("--micro-batch", type=int, help="pin sequences per GPU per micro-step (default: searched)")
    t.add_argument("--min-billable", help="bill every job at least this long per GPU, e.g. 10m (default 0)")
    t.add_argument("--global-batch", type=int, default=64)
    t.add_argument("--gpus", type=int, help="pin the GPU count")
    t.add_argument("--deadline", help="finish within, e.g. 12h, 3d, 90m")
    t.add_argument("--budget", type=float, help="spend at most this many USD")
    t.add_argument("--top", type=int, default=10)
    t.set_defaults(fn=cmd_train)

    s = psub.add_parser("serve", help="KV cache, latency, throughput, replicas and cost of serving")
    _common(s)
    s.add_argument("--data", help="a thresher output directory with prompts and responses (e.g. SFT data)")
    s.add_argument("--prompt-field", help="with --response-field: plain-text fields to measure (default: from the rows' shape; a chat's prompt is the conversation before its last assistant turn)")
    s.add_argument("--response-field")
    s.add_argument("--chat-template", help="chat template counted in chat rows: chatml (default), llama3, llama2, mistral, gemma, none, or a tokenizer_config.json (or its folder)")
    s.add_argument("--sample", type=int, default=None)
    s.add_argument("--tokenizer", default="cl100k_base", help="cl100k_base (offline tiktoken) or a tokenizer.json path")
    s.add_argument("--prompt-len", default="512", help="prompt tokens: N or mean=N,p95=M (without --data)")
    s.add_argument("--output-len", default="256", help="response tokens: N or mean=N,p95=M (without --data)")
    s.add_argument("--rate", type=float, default=1.0, help="requests per second to serve")
    s.add_argument("--ttft", default="1s", help="time-to-first-token SLO at p95, e.g. 500ms")
    s.add_argument("--tpot", default="50ms", help="time per output token SLO")
    s.add_argument("--quant", default="w16a16kv16", help="bits, e.g. w4a16kv16 (AWQ/GPTQ), w8a8kv8 (FP8)")
    s.add_argument("--tp", type=int, default=1)
    s.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    s.add_argument("--max-num-seqs", type=int, default=256)
    s.add_argument("--max-model-len", type=int)
    s.add_argument("--block-size", type=int, default=16, help="vLLM KV block size in tokens: 8, 16 or 32 (default 16)")
    s.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto",
                   help="fp8: an 8-bit KV cache (vLLM's --kv-cache-dtype fp8), twice the blocks of 16-bit")
    s.add_argument("--max-throughput", action="store_true",
                   help="no latency SLO: the largest batch the KV cache holds (memory-bound), for offline/batch jobs")
    s.add_argument("--no-chunked-prefill", action="store_true",
                   help="prefill each batch serially before decoding (default: chunked prefill in continuous batching)")
    s.add_argument("--max-num-batched-tokens", type=int, help="tokens per step (chunk budget; default 2048)")
    s.set_defaults(fn=cmd_serve)

    r = psub.add_parser("roofline", help="per-op FLOPs, bytes, intensity and bound of one prefill and one decode step")
    _common(r)
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--seq", type=int, default=1024, help="prompt length (prefill) and KV context (decode)")
    r.add_argument("--quant", default="w16a16kv16")
    r.add_argument("--tp", type=int, default=1)
    r.add_argument("--no-flash", action="store_true", help="attention with the score matrix in memory")
    r.set_defaults(fn=cmd_roofline)

    lm = psub.add_parser("models", help="list the model catalogue")
    lm.add_argument("--json", action="store_true")
    lm.set_defaults(fn=cmd_models)
    lg = psub.add_parser("gpus", help="list the GPU catalogue")
    lg.add_argument("--hardware", action="append", default=[], help="YAML with more GPUs (catalogue format)")
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(fn=cmd_gpus)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogue name (list them: thresher plan models) or path to a config.json")
    p.add_argument("--gpu", help="pin the GPU type (comma list allowed; list them: thresher plan gpus); default: every catalogue GPU")
    p.add_argument("--hardware", action="append", default=[], help="YAML with more GPUs (catalogue format)")
    p.add_argument("--price", type=float, help="override $/GPU-hour (with one --gpu)")
    p.add_argument("--mode", choices=["calibrated", "ideal"], default="calibrated")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--chart", help="write roofline and memory charts (PNG and SVG) into this directory")


def parse_duration(s: str) -> float:
    """'12h', '3d', '90m', '45s', '500ms' -> hours (for deadlines) are derived by callers; returns seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h|d)?\s*", s or "")
    if not m:
        raise ThresherError(f"duration '{s}': use a number with ms, s, m, h or d (e.g. 12h)")
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 3600}[m.group(2)]


def parse_quant(s: str):
    from thresher.capacity.roofline import Precision

    m = re.fullmatch(r"w(\d+)a(\d+)(?:kv(\d+))?", s.lower())
    if not m:
        raise ThresherError(f"--quant '{s}': use wNaM[kvK], e.g. w16a16kv16, w4a16kv16, w8a8kv8")
    w, a, kv = int(m.group(1)), int(m.group(2)), int(m.group(3) or 16)
    return Precision(w, a, kv)


def _gpus(args) -> list:
    from thresher.capacity.hardware import catalogue, get_gpu

    if args.gpu:
        names = [g for g in args.gpu.split(",") if g]
        if args.price is not None and len(names) > 1:
            raise ThresherError("--price applies to one --gpu")
        if args.price is not None and args.price < 0:
            raise ThresherError(f"--price {args.price:g}: use a $/GPU-hour of 0 or more")
        return [get_gpu(g, args.hardware, args.price) for g in names]
    return list(catalogue(args.hardware).values())


def cmd_train(args) -> int:
    from thresher.capacity.models import get_model
    from thresher.capacity.search import METHODS, RECOMPUTE, search
    from thresher.capacity.stats import LengthStats
    from thresher.capacity.training import LORA_TARGETS, TrainInputs

    model = get_model(args.model)
    pins = {"tp": args.tp, "pp": args.pp, "micro_batch": args.micro_batch}  # None: the search varies them
    args.tp, args.pp, args.micro_batch = (1 if v is None else v for v in (args.tp, args.pp, args.micro_batch))
    _check_train_args(args, model)
    if args.data:
        if args.field:
            data = LengthStats.from_files(args.data, args.field, args.tokenizer, sample=args.sample)
        else:
            from thresher.capacity.stats import training_stats

            data = training_stats(args.data, args.tokenizer, args.sample, args.chat_template)
    elif args.tokens:
        data = LengthStats.parse(args.tokens, args.rows)
    else:
        raise ThresherError("give --data OUT (a thresher output) or --tokens N")
    targets = parse_lora_targets(args.lora_targets, LORA_TARGETS)
    base = TrainInputs(data=data, epochs=args.epochs, max_len=args.max_len, packing=not args.no_packing,
                       lora_rank=args.lora_rank, lora_targets=targets, optimizer=args.optimizer, tp=args.tp, pp=args.pp,
                       micro_batch=args.micro_batch, global_batch=args.global_batch, mode=args.mode,
                       adapter_dtype=args.adapter_dtype, sequence_parallel=not args.no_sequence_parallel)
    if hasattr(base, "objective"):  # DPO/KTO rows are planned as DPO/KTO
        base = dataclasses.replace(base, objective=data.objective)
    deadline = parse_duration(args.deadline) / 3600 if args.deadline else None
    gpus = _gpus(args)
    res = search(model, gpus, base, deadline, args.budget,
                 counts=(args.gpus,) if args.gpus else None,
                 tps=(pins["tp"],) if pins["tp"] else None, pps=(pins["pp"],) if pins["pp"] else None,
                 micro_batches=(pins["micro_batch"],) if pins["micro_batch"] else None,
                 min_billable_h=parse_duration(args.min_billable) / 3600 if args.min_billable else 0.0,
                 methods=(args.method,) if args.method else METHODS,
                 zeros=(args.zero,) if args.zero is not None else (0, 1, 2, 3),
                 recomputes=(args.recompute,) if args.recompute else RECOMPUTE)
    out = {"model": model.key, "params": model.params(), "active_params": model.params(active=True),
           "data": {**data.summary(), "packing_efficiency": round(data.packing_efficiency(args.max_len), 4)},
           "deadline_h": deadline, "budget_usd": args.budget, "considered": res.considered,
           "plans": [p.to_dict() for p in res.ranked[: args.top]]}
    if not res.ranked:
        out["why"] = _why_none(model, gpus, base, res, deadline, args)
        if getattr(args, "_closest", None) is not None:
            out["closest"] = args._closest.to_dict()  # the memory of the configuration that came closest
    if args.chart and res.ranked:
        from thresher.capacity.charts import memory_chart, roofline_chart

        best = res.ranked[0]
        out["charts"] = memory_chart([best], Path(args.chart) / "train-memory") + roofline_chart(
            model, [g for g in gpus if g.key == best.gpu][0], args.micro_batch, args.max_len,
            Path(args.chart) / "train-roofline", mode=args.mode, tp=args.tp, training=True)
    if _is_output(args.data):
        def charts() -> dict:
            from thresher.capacity.charts import memory_svg, roofline_svg

            if not res.ranked:
                return {}
            gpu = [g for g in gpus if g.key == res.ranked[0].gpu][0]
            return {"memory": memory_svg(res.ranked[:4]),
                    "roofline": roofline_svg(model, gpu, args.micro_batch, args.max_len, mode=args.mode, tp=args.tp,
                                             training=True)}

        _to_output(args, "train", out, charts)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        _print_train(out, data)
        _print_charts(out)
    return 0 if res.ranked else 1


LORA_SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
              "down": "down_proj"}


def parse_lora_targets(spec: str, every: tuple[str, ...]) -> tuple[str, ...]:
    """'all' / 'all-linear' (every linear, PEFT's spelling), or a comma list of module names, long
    (q_proj) or short (q, v, gate)."""
    spec = (spec or "").strip().lower()
    if spec in ("all", "all-linear", "all_linear"):
        return tuple(every)
    out = []
    for x in (x.strip() for x in spec.split(",")):
        if not x:
            continue
        name = LORA_SHORT.get(x, x)
        if name not in every:
            raise ThresherError(f"--lora-targets: unknown module '{x}'; use all-linear or a comma list of "
                                f"{', '.join(LORA_SHORT)} (or {', '.join(every)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ThresherError("--lora-targets: name at least one module (e.g. q,v) or all-linear")
    return tuple(out)


def _check_train_args(args, model) -> None:
    """Every invalid number and incompatible combination as one line, before any planning."""
    for name in ("micro_batch", "global_batch", "lora_rank", "max_len", "tp", "pp", "top", "rows"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ThresherError(f"--{name.replace('_', '-')} {v}: use 1 or more")
    if args.gpus is not None and args.gpus < 1:
        raise ThresherError(f"--gpus {args.gpus}: use 1 or more")
    if not args.epochs > 0:
        raise ThresherError(f"--epochs {args.epochs:g}: use a number above 0")
    if args.budget is not None and not args.budget > 0:
        raise ThresherError(f"--budget {args.budget:g}: use an amount above 0")
    if args.sample is not None and args.sample < 1:
        raise ThresherError(f"--sample {args.sample}: use 1 or more")
    if model.heads % args.tp:
        raise ThresherError(f"--tp {args.tp} does not divide {model.key}'s {model.heads} attention heads")
    if model.kv_heads % args.tp and args.tp % model.kv_heads:
        raise ThresherError(f"--tp {args.tp} neither divides nor is a multiple of {model.key}'s {model.kv_heads} KV heads")
    if args.pp > model.layers:
        raise ThresherError(f"--pp {args.pp}: {model.key} has only {model.layers} layers")
    if args.gpus is not None and args.gpus % (args.tp * args.pp):
        raise ThresherError(f"--gpus {args.gpus} is not a multiple of --tp {args.tp} x --pp {args.pp} "
                            f"= {args.tp * args.pp}")
    if args.global_batch % args.micro_batch:
        raise ThresherError(f"--global-batch {args.global_batch} is not a multiple of --micro-batch {args.micro_batch}")


def _is_output(data: str | None) -> bool:
    """--data names a thresher output directory (one with a ledger), not bare data files."""
    return bool(data) and (Path(data) / "ledger.json").is_file()


def _to_output(args, command: str, result: dict, charts) -> None:
    """``--data OUT`` on a thresher output: the plan and its memory and roofline charts (SVG text)
    into ``OUT/plan.json``, and ``OUT/report.html`` rebuilt to show them; both listed among the
    output's files. A chart or report that cannot be made is a warning: the plan stands."""
    import sys

    from thresher.pipeline import outdir
    from thresher.pipeline.io.writers import write_bytes_atomic

    out = Path(args.data)
    try:
        svgs = charts()
    except Exception as e:  # noqa: BLE001 - the numbers matter more than the pictures
        print(f"warning: no charts for {out}/report.html ({type(e).__name__}: {e})", file=sys.stderr)
        svgs = {}
    given = {k: v for k, v in vars(args).items() if k != "fn" and isinstance(v, (str, int, float, bool, type(None)))}
    plan = {"command": command, "args": given, "result": result, "charts": svgs}
    write_bytes_atomic(out / "plan.json", (json.dumps(plan, indent=1, default=float) + "\n").encode("utf-8"))
    outdir.add_owned(out, ["plan.json"])
    try:
        from thresher.pipeline.report import write_report

        path = write_report(out)
    except Exception as e:  # noqa: BLE001
        print(f"warning: {out}/report.html not rebuilt ({type(e).__name__}: {e})", file=sys.stderr)
        return
    print(f"plan and charts written to {out / 'plan.json'} and shown in {path}", file=sys.stderr)


def _why_none(model, gpus, base, res, deadline, args) -> str:
    """Why nothing qualified, and what would: the overflowing component, or the best miss."""
    if not res.fitting:
        p = _closest(model, gpus, base, args)
        args._closest = p  # --json carries its memory
        t = dataclasses.replace(base, gpus=p.gpus, method=p.method, zero=p.zero, recompute=p.recompute)
        g = [x for x in gpus if x.key == p.gpu][0]
        k, v = max(((k, v) for k, v in p.memory.items() if k not in ("capacity", "total", "fits", "pageable")), key=lambda kv: kv[1])
        over = p.memory["total"] - p.memory["capacity"]
        hint = _what_fits(model, gpus, base, args)
        return (f"no configuration fits in memory. Closest: {t.method}, ZeRO-{t.zero}, recompute {t.recompute}, {t.gpus} x {g.key}: "
                f"{p.memory['total']:.1f} GiB per GPU of {p.memory['capacity']:.1f} — over by {over:.1f} GiB; the largest "
                f"part is {k} ({v:.1f} GiB). {hint}")
    best = res.fitting[0]
    parts = []
    if deadline is not None and best.hours > deadline:
        parts.append(f"the fastest configuration that fits ({best.gpus} x {best.gpu}, {best.method}) needs "
                     f"{best.hours:.1f} h, over the {deadline:.1f} h deadline")
    if args.budget is not None:
        cheapest = min(res.fitting, key=lambda p: p.cost_usd)
        if cheapest.cost_usd > args.budget:
            parts.append(f"the cheapest that fits costs ${cheapest.cost_usd:,.0f}, over the ${args.budget:,.0f} budget")
    return "; ".join(parts) or "no configuration meets the constraints"


def _closest(model, gpus, base, args):
    """Of the configurations the pins allow, the one whose per-GPU memory comes closest to fitting
    (the smallest total / capacity)."""
    from thresher.capacity.search import METHODS, RECOMPUTE
    from thresher.capacity.training import plan_training

    unit = base.tp * base.pp
    counts = (args.gpus,) if args.gpus else tuple(c for c in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if c % unit == 0) or (unit,)
    best = None
    for g in gpus:
        for n in counts:
            for method in ((args.method,) if args.method else METHODS):
                for zero in ((args.zero,) if args.zero is not None else (0, 1, 2, 3)):
                    if n == 1 and zero > 0 and args.zero is None:
                        continue
                    for rc in ((args.recompute,) if args.recompute else RECOMPUTE):
                        p = plan_training(model, g, dataclasses.replace(base, gpus=n, method=method, zero=zero, recompute=rc))
                        key = p.memory["total"] / p.memory["capacity"]
                        if best is None or key < best[0]:
                            best = (key, p)
    return best[1]


def _what_fits(model, gpus, base, args) -> str:
    from thresher.capacity.search import search

    wider = search(model, gpus, base, None, None)
    if not wider.fitting:
        return "Nothing in the search space fits: use tensor/pipeline parallelism (--tp/--pp) or a smaller model."
    cheapest = min(wider.fitting, key=lambda p: (p.gpus, p.cost_usd))
    return (f"Fits: {cheapest.method} with ZeRO-{cheapest.zero}, recompute {cheapest.recompute}, on "
            f"{cheapest.gpus} x {cheapest.gpu} ({cheapest.memory['total']:.1f} GiB per GPU).")


def _console():
    import shutil

    from rich.console import Console

    return Console(width=max(150, shutil.get_terminal_size((150, 40)).columns))


def _print_train(out: dict, data) -> None:
    from rich.table import Table

    c = _console()
    s = out["data"]
    c.print(f"[bold]{out['model']}[/]: {out['params'] / 1e9:.2f} B parameters ({out['active_params'] / 1e9:.2f} B active); "
            f"data: {s['rows']:,} sequences, {s['tokens']:,} tokens (mean {s['mean']}, p95 {s['p95']:.0f}; {s['source']})")
    if not out["plans"]:
        c.print(f"[red]no feasible configuration[/]: {out.get('why', '')}")
        return
    tab = Table(title=f"cheapest of {out['considered']} configurations", title_justify="left")
    for col in ("#", "GPU", "n", "method", "layout", "ZeRO", "recompute", "GiB/GPU", "steps", "step s", "hours", "GPU-h",
                "USD", "MFU"):
        tab.add_column(col, justify="right" if col not in ("GPU", "method", "layout", "recompute") else "left")
    for i, p in enumerate(out["plans"], 1):
        layout = " ".join(f"{k}{p.get(f)}" for k, f in (("TP", "tp"), ("PP", "pp"), ("CP", "cp"), ("DP", "dp"), ("EP", "ep"))
                          if p.get(f, 1) > 1 or k == "DP") + f" mb{p['micro_batch']}x{p.get('accumulation', 1)}"
        tab.add_row(f"{i}{'*' if p.get('pareto') else ''}", p["gpu"], str(p["gpus"]), p["method"], layout, str(p["zero"]),
                    p["recompute"],
                    f"{p['memory']['total']:.1f}/{p['memory']['capacity']:.0f}", f"{p['steps']:,}", f"{p['step_s']:.2f}",
                    f"{p['hours']:.2f}", f"{p['gpu_hours']:.1f}", f"{p['cost_usd']:,.2f}", f"{p['mfu']:.0%}")
    c.print(tab)
    if any(p.get("pareto") for p in out["plans"]):
        c.print("* on the cost/time Pareto front (nothing else is both cheaper and faster)")
    best = out["plans"][0]
    m = best["memory"]
    c.print("memory of #1 per GPU (GiB): " + ", ".join(f"{k} {m.get(k, 0.0):.1f}" for k in
                                                      ("weights", "gradients", "optimizer", "activations", "logits",
                                                       "buffers", "reserve")))
    for note in best["notes"]:
        c.print(f"note: {note}")


def cmd_serve(args) -> int:
    from thresher.capacity.models import get_model
    from thresher.capacity.serving import ServeInputs, plan_serving
    from thresher.capacity.stats import LengthStats

    model = get_model(args.model)
    if args.data:
        if args.prompt_field or args.response_field:
            prompt = LengthStats.from_files(args.data, args.prompt_field or "prompt", args.tokenizer, sample=args.sample)
            output = LengthStats.from_files(args.data, args.response_field or "response", args.tokenizer,
                                            sample=args.sample)
        else:
            from thresher.capacity.stats import serving_stats

            prompt, output = serving_stats(args.data, args.tokenizer, args.sample, args.chat_template)
    else:
        prompt, output = LengthStats.parse(args.prompt_len), LengthStats.parse(args.output_len)
    s = ServeInputs(prompt=prompt, output=output, rate=args.rate, ttft_p95_s=parse_duration(args.ttft),
                    tpot_s=parse_duration(args.tpot), precision=parse_quant(args.quant), tp=args.tp,
                    gpu_memory_utilization=args.gpu_memory_utilization, max_num_seqs=args.max_num_seqs,
                    max_model_len=args.max_model_len, mode=args.mode, block_size=args.block_size,
                    max_num_batched_tokens=args.max_num_batched_tokens,
                    objective="throughput" if args.max_throughput else "slo", chunked_prefill=not args.no_chunked_prefill)
    if args.kv_cache_dtype == "fp8":
        s = dataclasses.replace(s, precision=dataclasses.replace(s.precision, kv_bits=8))
    if args.max_num_batched_tokens is not None and args.max_num_batched_tokens < 1:
        raise ThresherError(f"--max-num-batched-tokens {args.max_num_batched_tokens}: use 1 or more")
    plans = [plan_serving(model, g, s) for g in _gpus(args)]
    plans.sort(key=lambda p: (not p.loadable, not p.meets_slo, p.usd_per_million_tokens, -p.tokens_per_s))
    out = {"model": model.key, "prompt": prompt.summary(), "output": output.summary(), "rate": args.rate,
           "plans": [p.to_dict() for p in plans]}
    if args.chart:
        from thresher.capacity.charts import roofline_chart, serve_memory_chart

        best = plans[0]
        gpu = [g for g in _gpus(args) if g.key == best.gpu][0]
        out["charts"] = serve_memory_chart(plans[:4], Path(args.chart) / "serve-memory") + roofline_chart(
            model, gpu, max(1, best.batch), max(1, int(prompt.mean)), Path(args.chart) / "serve-roofline",
            precision=s.precision, mode=args.mode, tp=args.tp)
    if _is_output(args.data):
        def charts() -> dict:
            from thresher.capacity.charts import roofline_svg, serve_memory_svg

            best = plans[0]
            gpu = [g for g in _gpus(args) if g.key == best.gpu][0]
            return {"memory": serve_memory_svg(plans[:4]),
                    "roofline": roofline_svg(model, gpu, max(1, best.batch), max(1, int(prompt.mean)),
                                             precision=s.precision, mode=args.mode, tp=args.tp)}

        _to_output(args, "serve", out, charts)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
    else:
        _print_serve(out)
        _print_charts(out)
    return 0 if plans and plans[0].meets_slo else 1


def _print_serve(out: dict) -> None:
    from rich.table import Table

    c = _console()
    c.print(f"[bold]{out['model']}[/]: prompts mean {out['prompt']['mean']} p95 {out['prompt']['p95']:.0f} tokens, "
            f"responses mean {out['output']['mean']} tokens, {out['rate']} requests/s")
    tab = Table(title_justify="left")
    for col in ("GPU", "TP", "weights GiB", "KV blocks", "max seqs", "prefill p95 ms", "batch", "TPOT ms",
                "tok/s/replica", "replicas", "$/h", "$/M tok", "SLO"):
        tab.add_column(col, justify="left" if col == "GPU" else "right")
    for p in out["plans"]:
        if not p.get("loadable", True):
            tab.add_row(p["gpu"], str(p["tp"]), f"{p['weights_gib']:.1f}", f"{p['kv_blocks']:,}", "-", "-", "-", "-", "-",
                        "-", "-", "-", "[red]cannot load[/]")
            continue
        tab.add_row(p["gpu"], str(p["tp"]), f"{p['weights_gib']:.1f}", f"{p['kv_blocks']:,}", str(p["max_concurrent"]),
                    f"{p['prefill_ms_p95']:.0f}", str(p["batch"]), f"{p['tpot_ms']:.1f}", f"{p['tokens_per_s']:,.0f}",
                    str(p["replicas"]), f"{p['usd_per_hour']:.2f}",
                    "-" if not p["meets_slo"] else f"{p['usd_per_million_tokens']:.3f}",
                    "yes" if p["meets_slo"] else "[red]no[/]")
    c.print(tab)
    best = out["plans"][0]
    if best["decode_ms_by_batch"]:
        c.print(f"decode step (ms) by batch on {best['gpu']}: " +
                ", ".join(f"{b}: {t:.1f}" for b, t in best["decode_ms_by_batch"].items()))
        m = best["memory"]
        c.print(f"memory per GPU on {best['gpu']} (GiB): weights {m['weights']:.1f}, activations {m['activation_peak']:.1f}, "
                f"non-torch {m['non_torch']:.1f}, KV cache {m['kv_cache']:.1f} ({best['kv_blocks']:,} blocks of "
                f"{best['block_size']} tokens, {best['kv_bits']}-bit), unused {m['unused']:.1f}; TTFT p95 "
                f"{best['ttft_ms_p95']:.0f} ms" + (" — max-throughput: no latency SLO" if best["objective"] == "throughput" else ""))
    for p in out["plans"]:
        if p["note"]:
            c.print(f"{p['gpu']}: {p['note']}")


def cmd_roofline(args) -> int:
    from thresher.capacity.models import get_model
    from thresher.capacity.roofline import CALIBRATED, IDEAL, forward, ridge_point
    from thresher.capacity.serving import check_tp

    model = get_model(args.model)
    for name in ("batch", "seq"):
        if getattr(args, name) < 1:
            raise ThresherError(f"--{name} {getattr(args, name)}: use 1 or more")
    check_tp(model, args.tp)
    gpus = _gpus(args)
    if len(gpus) != 1:
        raise ThresherError("plan roofline takes one --gpu")
    gpu = gpus[0]
    p = parse_quant(args.quant)
    eff = CALIBRATED if args.mode == "calibrated" else IDEAL
    out = {"model": model.key, "gpu": gpu.key, "mode": args.mode, "ridge_flop_per_byte": ridge_point(gpu, p.compute_dtype),
           "phases": {}}
    for phase in ("prefill", "decode"):
        f = forward(model, gpu, phase, args.batch, args.seq, p=p, eff=eff, flash=not args.no_flash, tp=args.tp)
        out["phases"][phase] = {"time_ms": f.time * 1e3, "flops": f.flops, "bytes": f.bytes, "ops": [
            {"op": o.name, "count": o.count, "flops": o.flops, "bytes": o.bytes, "intensity": o.intensity,
             "bound": o.bound, "time_us": o.time * 1e6} for o in f.ops]}
    if args.chart:
        from thresher.capacity.charts import roofline_chart

        out["charts"] = roofline_chart(model, gpu, args.batch, args.seq, Path(args.chart) / "roofline", precision=p,
                                       mode=args.mode, tp=args.tp)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    from rich.table import Table

    c = _console()
    c.print(f"[bold]{model.key}[/] on {gpu.name} ({args.mode}): ridge point {out['ridge_flop_per_byte']:.0f} FLOP/byte")
    for phase, d in out["phases"].items():
        tab = Table(title=f"{phase}: batch {args.batch}, {args.seq} tokens — {d['time_ms']:.2f} ms", title_justify="left")
        for col in ("op", "x", "GFLOP", "MB", "FLOP/byte", "bound", "µs each"):
            tab.add_column(col, justify="left" if col in ("op", "bound") else "right")
        for o in d["ops"]:
            tab.add_row(o["op"], str(o["count"]), f"{o['flops'] / 1e9:,.2f}", f"{o['bytes'] / 1e6:,.2f}",
                        f"{o['intensity']:,.1f}", o["bound"], f"{o['time_us']:,.1f}")
        c.print(tab)
    _print_charts(out)
    return 0


def _print_charts(out: dict) -> None:
    for path in out.get("charts") or []:
        print(f"chart: {path}")


def cmd_models(args) -> int:
    from thresher.capacity.models import catalogue

    rows = [{"model": k, "params": m.params(), "active_params": m.params(active=True), "layers": m.layers,
             "hidden": m.hidden, "heads": m.heads, "kv_heads": m.kv_heads, "experts": m.experts,
             "max_position": m.max_position, "kv_bytes_per_token": m.kv_bytes_per_token()}
            for k, m in catalogue().items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    tab = Table(title="models (or give --model the path of a Hugging Face config.json)", title_justify="left")
    for col in ("model", "params B", "active B", "layers", "hidden", "heads", "KV heads", "experts", "context", "KV KiB/token"):
        tab.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        tab.add_row(r["model"], f"{r['params'] / 1e9:.2f}", f"{r['active_params'] / 1e9:.2f}", str(r["layers"]),
                    str(r["hidden"]), str(r["heads"]), str(r["kv_heads"]), str(r["experts"]), f"{r['max_position']:,}",
                    f"{r['kv_bytes_per_token'] / 1024:.0f}")
    _console().print(tab)
    return 0


def cmd_gpus(args) -> int:
    from thresher.capacity.hardware import catalogue

    rows = [{"gpu": k, "name": g.name, "memory_gib": g.memory_bytes / (1 << 30), "bandwidth_gbs": g.bandwidth / 1e9,
             "bf16_tflops": g.peak("bf16") / 1e12, "fp8_tflops": g.peak("fp8") / 1e12,
             "interconnect": g.interconnect_kind, "interconnect_gbs": g.interconnect / 1e9,
             "usd_per_hour": g.price_per_hour} for k, g in sorted(catalogue(args.hardware).items())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    tab = Table(title="GPUs (add your own with --hardware FILE.yaml)", title_justify="left")
    for col in ("gpu", "name", "GiB", "GB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "link", "$/h"):
        tab.add_column(col, justify="left" if col in ("gpu", "name", "link") else "right")
    for r in rows:
        tab.add_row(r["gpu"], r["name"], f"{r['memory_gib']:.0f}", f"{r['bandwidth_gbs']:,.0f}", f"{r['bf16_tflops']:,.0f}",
                    f"{r['fp8_tflops']:,.0f}", f"{r['interconnect']} {r['interconnect_gbs']:.0f} GB/s",
                    f"{r['usd_per_hour']:.2f}")
    _console().print(tab)
    return 0

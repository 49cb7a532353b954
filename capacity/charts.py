"""Charts for reports: a roofline (every op of a layer, prefill and decode, against the GPU's
roof) and a per-GPU memory breakdown (training or serving), each as PNG and SVG files
(``*_chart``) or as SVG text for report.html (``*_svg``: text kept as text, no metadata, every
mark drawn from data in a group whose id starts with ``mark``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.roofline import BF16, CALIBRATED, IDEAL, Precision, forward, training_step


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


REPORT_SIZE = (7.5, 4.8)  # inches: the charts report.html shows side by side, at one scale


def svg_text(fig) -> str:
    """``fig`` as SVG text, small: fonts left to the viewer (text, not glyph outlines), no
    metadata, ids the same on every call."""
    import io

    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "thresher"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buf.getvalue()


def _save(fig, prefix: Path) -> list[str]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = prefix.with_suffix(f".{ext}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
        out.append(str(path))
    return out


def roofline_chart(m: Model, gpu: GPU, batch: int, seq: int, prefix: Path, precision: Precision = BF16,
                   mode: str = "ideal", tp: int = 1, training: bool = False) -> list[str]:
    fig = roofline_figure(m, gpu, batch, seq, precision, mode=mode, tp=tp, training=training)
    paths = _save(fig, prefix)
    _plt().close(fig)
    return paths


def roofline_svg(m: Model, gpu: GPU, batch: int, seq: int, precision: Precision = BF16, mode: str = "ideal",
                 tp: int = 1, training: bool = False) -> str:
    return svg_text(roofline_figure(m, gpu, batch, seq, precision, REPORT_SIZE, mode, tp, training))


MAX_LABELS_PER_PHASE = 4  # the ops that take the most time; the rest are dots without names


def _phases(m: Model, gpu: GPU, batch: int, seq: int, precision: Precision, eff, tp: int, training: bool):
    if training:
        step = training_step(m, gpu, batch, seq, p=precision, eff=eff, tp=tp)
        return [(f"training forward (micro-batch {batch}, {seq} tokens)", "forward", "o", step["forward"]),
                (f"training backward (micro-batch {batch}, {seq} tokens)", "backward", "^", step["backward"])]
    return [(f"prefill (batch 1, {seq} tokens)", "prefill", "o", forward(m, gpu, "prefill", 1, seq, p=precision, eff=eff, tp=tp)),
            (f"decode (batch {batch}, {seq} tokens of KV)", "decode", "s",
             forward(m, gpu, "decode", batch, seq, p=precision, eff=eff, tp=tp))]


def roofline_figure(m: Model, gpu: GPU, batch: int, seq: int, precision: Precision = BF16, size: tuple = (8, 5),
                    mode: str = "ideal", tp: int = 1, training: bool = False):
    """Every op of a forward pass (prefill and decode; or a training step's forward and backward)
    at its arithmetic intensity and attained FLOP/s in ``mode``: ideal points sit on the roof,
    calibrated ones below it (at the efficiency factors' share of peak and bandwidth). Ops at the
    same point share one label; only the few that take the most time are named, and a label that
    would overlap another is moved or dropped."""
    plt = _plt()
    eff = CALIBRATED if mode == "calibrated" else IDEAL
    peak = gpu.peak(precision.compute_dtype)
    fig, ax = plt.subplots(figsize=size)
    x = np.logspace(-1, 4.5, 200)
    ax.loglog(x, np.minimum(peak, gpu.bandwidth * x), "k-", lw=1.5, label=f"{gpu.key} roof")
    if mode == "calibrated":
        ax.loglog(x, np.minimum(peak * eff.compute, gpu.bandwidth * eff.memory * x), "k--", lw=1,
                  label=f"calibrated ({eff.compute:.0%} of peak, {eff.memory:.0%} of bandwidth)")
    wanted = []
    for label, key, marker, f in _phases(m, gpu, batch, seq, precision, eff, tp, training):
        ops = [o for o in f.ops if o.flops > 0 and o.time > 0]
        dots = ax.scatter([o.intensity for o in ops], [o.flops / o.time for o in ops], marker=marker, label=label,
                          alpha=0.8)
        dots.set_gid(f"mark-{key}")
        groups: dict[tuple, list] = {}
        for o in ops:  # ops at (nearly) the same point share a label
            groups.setdefault((round(np.log10(o.intensity), 2), round(np.log10(o.flops / o.time), 2)), []).append(o)
        ranked = sorted(groups.values(), key=lambda g: -sum(o.time * o.count for o in g))
        for g in ranked[:MAX_LABELS_PER_PHASE]:
            names = ", ".join(o.name for o in g[:3]) + (f" +{len(g) - 3}" if len(g) > 3 else "")
            wanted.append((names, g[0].intensity, g[0].flops / g[0].time))
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel(f"attained FLOP/s ({mode})")
    what = "training step" if training else "per-layer ops"
    ax.set_title(f"{m.key} on {gpu.name}: {what}, {mode}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below the axes, off the points
    _place_labels(fig, ax, wanted)
    return fig


def _place_labels(fig, ax, wanted: list[tuple[str, float, float]]) -> None:
    """Annotate each point at the first of a few offsets where its text box overlaps no label
    placed before it, nor the legend; drop it where none is free."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = []
    leg = ax.get_legend()
    if leg is not None:
        taken.append(leg.get_window_extent(renderer))
    axbox = ax.get_window_extent(renderer)
    offsets = [(5, 4), (5, -10), (-5, 4), (-5, -10), (5, 14), (5, -20), (-5, 14), (-5, -20), (5, 24), (-5, 24)]
    for i, (text, xv, yv) in enumerate(wanted):
        for dx, dy in offsets:
            t = ax.annotate(text, (xv, yv), xytext=(dx, dy), textcoords="offset points", fontsize=6,
                            ha="left" if dx > 0 else "right", alpha=0.85)
            box = t.get_window_extent(renderer)
            inside = axbox.x0 <= box.x0 and box.x1 <= axbox.x1 and axbox.y0 <= box.y0 and box.y1 <= axbox.y1
            if inside and not any(box.overlaps(o) for o in taken):
                t.set_gid(f"label-{i}")
                taken.append(box)
                break
            t.remove()


def memory_chart(plans: list, prefix: Path) -> list[str]:
    """Stacked per-GPU memory of training plans (``TrainPlan.memory`` in GiB) against capacity."""
    fig = _memory_fig(plans)
    paths = _save(fig, prefix)
    _plt().close(fig)
    return paths


def memory_svg(plans: list) -> str:
    return svg_text(_memory_fig(plans, REPORT_SIZE))


def _memory_fig(plans: list, size: tuple | None = None):
    plt = _plt()
    parts = ("weights", "gradients", "optimizer", "activations", "logits", "buffers", "reserve")
    fig, ax = plt.subplots(figsize=size or (max(4, 1.6 * len(plans)), 5))
    labels = [f"{p.gpus}x{p.gpu}\n{p.method} Z{p.zero}" for p in plans]
    bottom = np.zeros(len(plans))
    for part in parts:
        vals = np.array([p.memory.get(part, 0.0) for p in plans])
        bars = ax.bar(labels, vals, bottom=bottom, label=part)
        for i, b in enumerate(bars):
            b.set_gid(f"mark-{part}-{i}")
        bottom += vals
    for i, p in enumerate(plans):
        ax.hlines(p.memory["capacity"], i - 0.4, i + 0.4, colors="k", linestyles="--")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{plans[0].model}: memory per GPU (dashed: capacity)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, never on them
    return fig


def serve_memory_chart(plans: list, prefix: Path) -> list[str]:
    fig = _serve_memory_fig(plans)
    paths = _save(fig, prefix)
    _plt().close(fig)
    return paths


def serve_memory_svg(plans: list) -> str:
    return svg_text(_serve_memory_fig(plans))


def _serve_memory_fig(plans: list):
    """Stacked GPU memory of serving plans (``ServePlan.memory``, GiB) as vLLM splits it: weights,
    peak activations, non-torch memory, the KV cache, and what ``gpu_memory_utilization`` leaves."""
    plt = _plt()
    parts = (("weights", "weights"), ("activation_peak", "activations (peak)"), ("non_torch", "non-torch"),
             ("kv_cache", "KV cache"), ("unused", "left unused"))
    fig, ax = plt.subplots(figsize=REPORT_SIZE)
    labels = [f"{p.gpu}\nTP {p.tp}" for p in plans]
    bottom = np.zeros(len(plans))
    for key, label in parts:
        vals = np.array([p.memory.get(key, 0.0) for p in plans])
        bars = ax.bar(labels, vals, bottom=bottom, label=label)
        for i, b in enumerate(bars):
            b.set_gid(f"mark-{key}-{i}")
        bottom += vals
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{plans[0].model}: memory per GPU when serving")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, never on them
    return fig

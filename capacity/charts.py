"""Charts for reports: a roofline (every op of a layer, prefill and decode, against the GPU's
roof) and a per-GPU memory breakdown (training or serving), each as PNG and SVG files
(``*_chart``) or as SVG text for report.html (``*_svg``: text kept as text, no metadata, every
mark drawn from data in a group whose id starts with ``mark``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.roofline import BF16, IDEAL, Precision, forward


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


def roofline_chart(m: Model, gpu: GPU, batch: int, seq: int, prefix: Path, precision: Precision = BF16) -> list[str]:
    fig = _roofline_fig(m, gpu, batch, seq, precision)
    paths = _save(fig, prefix)
    _plt().close(fig)
    return paths


def roofline_svg(m: Model, gpu: GPU, batch: int, seq: int, precision: Precision = BF16) -> str:
    return svg_text(_roofline_fig(m, gpu, batch, seq, precision, REPORT_SIZE))


def _roofline_fig(m: Model, gpu: GPU, batch: int, seq: int, precision: Precision = BF16, size: tuple = (8, 5)):
    plt = _plt()
    peak = gpu.peak(precision.compute_dtype)
    fig, ax = plt.subplots(figsize=size)
    x = np.logspace(-1, 4, 200)
    ax.loglog(x, np.minimum(peak, gpu.bandwidth * x), "k-", lw=1.5, label=f"{gpu.key} roof")
    for phase, marker in (("prefill", "o"), ("decode", "s")):
        f = forward(m, gpu, phase, 1 if phase == "prefill" else batch, seq, p=precision, eff=IDEAL)
        ops = [o for o in f.ops if o.flops > 0 and o.time > 0]
        dots = ax.scatter([o.intensity for o in ops], [o.flops / o.time for o in ops], marker=marker,
                          label=f"{phase} (batch {1 if phase == 'prefill' else batch}, {seq} tokens)")
        dots.set_gid(f"mark-{phase}")
        for o in ops:
            ax.annotate(o.name, (o.intensity, o.flops / o.time), fontsize=6, alpha=0.7)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title(f"{m.key} on {gpu.name}: per-layer ops")
    ax.legend(fontsize=8)
    return fig


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
    parts = ("weights", "gradients", "optimizer", "activations", "logits", "reserve")
    fig, ax = plt.subplots(figsize=size or (max(4, 1.6 * len(plans)), 5))
    labels = [f"{p.gpus}x{p.gpu}\n{p.method} Z{p.zero}" for p in plans]
    bottom = np.zeros(len(plans))
    for part in parts:
        vals = np.array([p.memory[part] for p in plans])
        bars = ax.bar(labels, vals, bottom=bottom, label=part)
        for i, b in enumerate(bars):
            b.set_gid(f"mark-{part}-{i}")
        bottom += vals
    for i, p in enumerate(plans):
        ax.hlines(p.memory["capacity"], i - 0.4, i + 0.4, colors="k", linestyles="--")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{plans[0].model}: memory per GPU (dashed: capacity)")
    ax.legend(fontsize=8)
    return fig


def serve_memory_svg(plans: list) -> str:
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
    ax.legend(fontsize=8)
    return svg_text(fig)

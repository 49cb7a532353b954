"""Charts for reports: a roofline (every op of a layer, prefill and decode, against the GPU's
roof) and a per-GPU memory breakdown, each as PNG and SVG."""

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


def _save(fig, prefix: Path) -> list[str]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = prefix.with_suffix(f".{ext}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
        out.append(str(path))
    return out


def roofline_chart(m: Model, gpu: GPU, batch: int, seq: int, prefix: Path, precision: Precision = BF16) -> list[str]:
    plt = _plt()
    peak = gpu.peak(precision.compute_dtype)
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.logspace(-1, 4, 200)
    ax.loglog(x, np.minimum(peak, gpu.bandwidth * x), "k-", lw=1.5, label=f"{gpu.key} roof")
    for phase, marker in (("prefill", "o"), ("decode", "s")):
        f = forward(m, gpu, phase, 1 if phase == "prefill" else batch, seq, p=precision, eff=IDEAL)
        ops = [o for o in f.ops if o.flops > 0 and o.time > 0]
        ax.scatter([o.intensity for o in ops], [o.flops / o.time for o in ops], marker=marker,
                   label=f"{phase} (batch {1 if phase == 'prefill' else batch}, {seq} tokens)")
        for o in ops:
            ax.annotate(o.name, (o.intensity, o.flops / o.time), fontsize=6, alpha=0.7)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title(f"{m.key} on {gpu.name}: per-layer ops")
    ax.legend(fontsize=8)
    paths = _save(fig, prefix)
    plt.close(fig)
    return paths


def memory_chart(plans: list, prefix: Path) -> list[str]:
    """Stacked per-GPU memory of training plans (``TrainPlan.memory`` in GiB) against capacity."""
    plt = _plt()
    parts = ("weights", "gradients", "optimizer", "activations", "logits", "reserve")
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(plans)), 5))
    labels = [f"{p.gpus}x{p.gpu}\n{p.method} Z{p.zero}" for p in plans]
    bottom = np.zeros(len(plans))
    for part in parts:
        vals = np.array([p.memory[part] for p in plans])
        ax.bar(labels, vals, bottom=bottom, label=part)
        bottom += vals
    for i, p in enumerate(plans):
        ax.hlines(p.memory["capacity"], i - 0.4, i + 0.4, colors="k", linestyles="--")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{plans[0].model}: memory per GPU (dashed: capacity)")
    ax.legend(fontsize=8)
    paths = _save(fig, prefix)
    plt.close(fig)
    return paths

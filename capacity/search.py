"""Search: the cheapest feasible training configurations (GPU type x count x method x ZeRO stage x
recomputation) that fit in memory, finish before a deadline and stay within a budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.training import TrainInputs, TrainPlan, plan_training

COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
METHODS = ("full", "lora", "qlora")
RECOMPUTE = ("none", "selective", "full")
COMPLEXITY = {"none": 0, "selective": 1, "full": 2}


@dataclass
class SearchResult:
    ranked: list[TrainPlan]  # feasible, cheapest first
    considered: int
    fitting: list[TrainPlan]  # fit in memory (deadline/budget aside)


def search(m: Model, gpus: list[GPU], base: TrainInputs, deadline_h: float | None = None, budget: float | None = None,
           counts: tuple[int, ...] = COUNTS, methods: tuple[str, ...] = METHODS, zeros: tuple[int, ...] = (0, 1, 2, 3),
           recomputes: tuple[str, ...] = RECOMPUTE) -> SearchResult:
    plans: list[TrainPlan] = []
    considered = 0
    for gpu in gpus:
        for n in counts:
            for method in methods:
                for zero in zeros:
                    if n == 1 and zero > 0:
                        continue  # nothing to shard over
                    for rc in recomputes:
                        if rc == "selective" and base.flash:
                            continue  # with FlashAttention there are no scores to drop: same as none
                        t = dataclasses.replace(base, gpus=n, method=method, zero=zero, recompute=rc)
                        considered += 1
                        plans.append(plan_training(m, gpu, t))
    fitting = [p for p in plans if p.fits]
    ok = [p for p in fitting if (deadline_h is None or p.hours <= deadline_h) and (budget is None or p.cost_usd <= budget)]
    ranked, seen = [], set()
    for p in sorted(ok, key=_rank):  # a ZeRO stage or recomputation that changes nothing is not a new option
        same = (p.gpu, p.gpus, p.method, round(p.cost_usd, 2), round(p.hours, 3))
        if same not in seen:
            seen.add(same)
            ranked.append(p)
    return SearchResult(ranked, considered, sorted(fitting, key=lambda p: p.hours))


def _rank(p: TrainPlan) -> tuple:
    """Cheapest (to the cent), then fastest, then the simplest setup."""
    return round(p.cost_usd, 2), p.hours, p.zero, COMPLEXITY[p.recompute], p.gpus

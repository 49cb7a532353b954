"""The GPU catalogue: dense peak FLOP/s per dtype, memory, bandwidths and an indicative price per
part, each with its source (``capacity/data/hardware.yaml``); users add parts in their own YAML."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from thresher.pipeline.errors import ThresherError

CATALOGUE = Path(__file__).parent / "data" / "hardware.yaml"
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
FLOATS = ["bf16", "fp16", "tf32", "fp32"]
FALLBACK = {"fp8": FLOATS, "int4": ["int8", *FLOATS], "int8": FLOATS, "bf16": FLOATS[1:], "fp16": ["bf16", "tf32", "fp32"],
            "tf32": ["fp32"], "fp32": []}
GB = 1e9
GIB = 1 << 30  # HBM and GDDR capacities marketed in "GB" are binary: an 80 GB part has 80 GiB


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    flops: dict[str, float]  # dtype -> dense peak FLOP/s (or OP/s)
    memory_bytes: float
    bandwidth: float  # HBM/GDDR bytes/s
    interconnect: float  # GPU-to-GPU bytes/s inside a node (NVLink, or PCIe)
    interconnect_kind: str
    price_per_hour: float
    source: str = ""
    price_source: str = ""
    extra: dict = field(default_factory=dict)
    gpus_per_node: int = 8  # GPUs sharing the intra-node link (NVLink/NVSwitch domain or PCIe host)
    network: float = 25e9  # inter-node bytes/s per GPU and direction (its share of the node's NICs)
    network_kind: str = "network"
    network_source: str = ""

    @property
    def link_intra(self) -> float:
        """Per-direction GPU-to-GPU bytes/s inside a node: catalogue figures are bidirectional
        aggregates (NVLink 4: 900 GB/s = 450 each way; PCIe 4 x16: 64 GB/s = 32 each way)."""
        return self.interconnect / 2

    def peak(self, dtype: str) -> float:
        """Dense peak for ``dtype``; a dtype the part has no tensor path for runs at the next wider one."""
        if dtype in self.flops:
            return self.flops[dtype]
        for d in FALLBACK[dtype]:  # e.g. fp8 on an A100 runs as bf16
            if d in self.flops:
                return self.flops[d]
        raise ThresherError(f"{self.key}: no peak FLOP/s for {dtype}")


def _parse(key: str, d: dict, where: str) -> GPU:
    missing = [f for f in ("flops", "memory_gb", "memory_bandwidth_gbs") if f not in d]
    if missing:
        raise ThresherError(f"{where}: GPU '{key}' lacks {', '.join(missing)}")
    unknown = set(d["flops"]) - set(DTYPES)
    if unknown:
        raise ThresherError(f"{where}: GPU '{key}': unknown dtype(s) {sorted(unknown)}; known: {', '.join(DTYPES)}")
    ic = d.get("interconnect", {})
    net = d.get("network", {})  # per-GPU NIC bandwidth between nodes, in Gb/s (as NICs are marketed)
    return GPU(key=key, name=d.get("name", key), flops={k: float(v) * 1e12 for k, v in d["flops"].items()},
               memory_bytes=float(d["memory_gb"]) * GIB, bandwidth=float(d["memory_bandwidth_gbs"]) * GB,
               interconnect=float(ic.get("gbs", d.get("pcie_gbs", 32))) * GB, interconnect_kind=ic.get("kind", "pcie"),
               price_per_hour=float(d.get("price_per_hour", 0.0)), source=d.get("source", ""),
               price_source=d.get("price_source", ""), gpus_per_node=int(d.get("gpus_per_node", 8)),
               network=float(net.get("gbps_per_gpu", 200)) / 8 * GB, network_kind=net.get("kind", "network"),
               network_source=net.get("source", "assumed: 200 Gb/s per GPU"))


@lru_cache(maxsize=8)
def _load(paths: tuple[str, ...]) -> dict[str, GPU]:
    out: dict[str, GPU] = {}
    for p in (str(CATALOGUE), *paths):
        data = yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ThresherError(f"{p}: expected a mapping of GPU name -> fields")
        for key, d in data.items():
            out[key.lower()] = _parse(key.lower(), d, p)
    return out


def catalogue(extra: list[str] | tuple[str, ...] = ()) -> dict[str, GPU]:
    return _load(tuple(str(p) for p in extra))


ALIASES = {"a100": "a100-80gb-sxm", "a100-40gb": "a100-40gb-sxm", "a100-80gb": "a100-80gb-sxm",
           "h100": "h100-sxm", "4090": "rtx-4090", "h200-sxm": "h200"}


def get_gpu(name: str, extra: list[str] | tuple[str, ...] = (), price: float | None = None) -> GPU:
    """A GPU by catalogue key (case-insensitive; a few aliases); an unknown name lists the known
    ones and the closest match."""
    cat = catalogue(extra)
    key = name.lower().strip()
    key = ALIASES.get(key, key)
    if key not in cat:
        close = difflib.get_close_matches(key, list(cat), n=1, cutoff=0.3)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ThresherError(f"unknown GPU '{name}'.{hint} Known: {', '.join(sorted(cat))} "
                            "(add your own with --hardware FILE.yaml)")
    gpu = cat[key]
    if price is not None:
        gpu = GPU(**{**gpu.__dict__, "price_per_hour": float(price)})
    return gpu

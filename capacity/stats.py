"""Token-length statistics the planners work from: measured on a thresher output directory (or any
JSONL/Parquet files) with a real tokenizer, or synthesised from a mean (and a p95)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from thresher.pipeline.errors import ThresherError
from thresher.pipeline.tokenizers import token_counter


@dataclass
class LengthStats:
    """Token lengths of ``rows`` sequences, represented by ``lengths`` (all of them, or an evenly
    spaced sample whose sums are scaled to ``rows``)."""

    lengths: np.ndarray
    rows: int
    source: str = ""
    tokenizer: str = ""

    @property
    def scale(self) -> float:
        return self.rows / max(1, len(self.lengths))

    @property
    def mean(self) -> float:
        return float(self.lengths.mean()) if len(self.lengths) else 0.0

    @property
    def total(self) -> float:
        return float(self.lengths.sum()) * self.scale

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.lengths, q)) if len(self.lengths) else 0.0

    def truncated(self, max_len: int) -> LengthStats:
        return LengthStats(np.minimum(self.lengths, max_len), self.rows, self.source, self.tokenizer)

    def sum_squares(self, max_len: int | None = None) -> float:
        """Σ len² (what attention costs: not mean(len)² x n)."""
        x = self.lengths if max_len is None else np.minimum(self.lengths, max_len)
        return float((x.astype(np.float64) ** 2).sum()) * self.scale

    def summary(self) -> dict:
        return {"rows": self.rows, "tokens": round(self.total), "mean": round(self.mean, 1),
                "p50": self.quantile(0.5), "p95": self.quantile(0.95), "max": float(self.lengths.max()) if len(self.lengths) else 0,
                "source": self.source, "tokenizer": self.tokenizer}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def constant(cls, length: float, rows: int = 1) -> LengthStats:
        return cls(np.full(1, float(length)), rows, f"given: {length:g} tokens")

    @classmethod
    def lognormal(cls, mean: float, p95: float, rows: int = 1, points: int = 1000) -> LengthStats:
        """A log-normal with this mean and 95th percentile (lengths of text are close to log-normal)."""
        if p95 <= mean:
            return cls.constant(mean, rows)
        z = NormalDist().inv_cdf(0.95)
        gap = math.log(p95) - math.log(mean)
        disc = z * z - 2 * gap
        if disc < 0:
            raise ThresherError(f"no log-normal has mean {mean:g} and p95 {p95:g}; give a smaller p95")
        sigma = z - math.sqrt(disc)
        mu = math.log(mean) - sigma * sigma / 2
        nd = NormalDist()
        x = np.array([math.exp(mu + sigma * nd.inv_cdf((i + 0.5) / points)) for i in range(points)])
        return cls(x, rows, f"given: mean {mean:g}, p95 {p95:g} (log-normal)")

    @classmethod
    def parse(cls, spec: str, rows: int = 1) -> LengthStats:
        """'512' or 'mean=512,p95=1500'."""
        try:
            if "=" not in spec:
                return cls.constant(float(spec), rows)
            kv = dict(part.split("=", 1) for part in spec.split(","))
            unknown = set(kv) - {"mean", "p95"}
            if unknown or "mean" not in kv:
                raise ValueError
            return cls.lognormal(float(kv["mean"]), float(kv.get("p95", kv["mean"])), rows)
        except ValueError:
            raise ThresherError(f"length '{spec}': give a number of tokens or mean=N,p95=M") from None

    @classmethod
    def from_files(cls, path: str | Path, field: str = "text", tokenizer: str = "cl100k_base",
                   sample: int | None = None) -> LengthStats:
        """Token lengths of ``field`` in a thresher output directory (its ``data/``) or JSONL/Parquet files."""
        files = _data_files(Path(path))
        texts = []
        for f in files:
            t = pq.read_table(f) if f.suffix == ".parquet" else pj.read_json(f)
            if field not in t.column_names:
                raise ThresherError(f"{f}: no field '{field}' (fields: {', '.join(t.column_names)})")
            texts.append(_as_text(t[field]))
        col = pa.chunked_array([c for t in texts for c in t.chunks], type=pa.string()) if texts else pa.chunked_array([], pa.string())
        rows = len(col)
        if rows == 0:
            raise ThresherError(f"{path}: no rows to measure")
        idx = np.arange(rows) if not sample or sample >= rows else np.linspace(0, rows - 1, sample).astype(np.int64)
        picked = col.take(pa.array(idx)).to_pylist()
        counter = token_counter(tokenizer)
        lengths = np.concatenate([counter.count(picked[i:i + 10_000]) for i in range(0, len(picked), 10_000)])
        return cls(lengths.astype(np.float64), rows, str(path), tokenizer)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pc.fill_null(col.cast(pa.string()), "")
    # structured (e.g. chat messages): count the JSON text, which is what a template renders close to
    return pa.chunked_array([pa.array([str(v) for v in col.to_pylist()], pa.string())])


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "data").is_dir():
        if not (path / "_SUCCESS").exists():
            raise ThresherError(f"{path} is an unfinished thresher run (no _SUCCESS); finish it with --resume")
        path = path / "data"
    files = sorted(f for f in path.glob("*") if f.suffix in (".jsonl", ".parquet", ".json"))
    if not files:
        raise ThresherError(f"{path}: no .jsonl or .parquet files")
    return files

"""Seeded spherical mini-batch k-means (Sculley 2010, "Web-scale k-means clustering") on unit vectors,
in numpy; and a seeded, order-free row sample (by a hash of each row's id) to fit it on.

Spherical: similarity is the dot product of unit vectors (cosine), and centroids are renormalised
after each update, as SemDeDup's clustering of embeddings does. Initialisation is k-means++
(Arthur & Vassilvitskii 2007) on cosine distance. Everything is drawn from ``numpy.random`` with
the given seed, so the same points in the same order give the same centroids.
"""

from __future__ import annotations

import numpy as np

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``x ^ seed``: a well-mixed 64-bit hash per value (for seeded sampling)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def sampled(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which rows fall in a seeded sample of about ``fraction`` of them. A row's membership depends
    only on its id and the seed, so any partitioning of the rows draws the same sample."""
    if fraction >= 1:
        return np.ones(len(ids), dtype=bool)
    return (mix64(ids, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on cosine distance (``1 - x.c``)."""
    centers = [int(rng.integers(len(x)))]
    dist = np.maximum(1.0 - x @ x[centers[0]], 0.0)
    for _ in range(1, k):
        total = dist.sum()
        nxt = int(rng.choice(len(x), p=dist / total)) if total > 0 else int(rng.integers(len(x)))
        centers.append(nxt)
        dist = np.minimum(dist, np.maximum(1.0 - x @ x[nxt], 0.0))
    return x[centers].copy()


def minibatch_kmeans(x: np.ndarray, k: int, seed: int, batch_size: int = 1024, iterations: int = 100,
                     init_size: int = 20_000) -> np.ndarray:
    """``k`` unit centroids of the unit rows of ``x`` (float32 ``(k, dim)``): k-means++ on up to
    ``init_size`` rows, then ``iterations`` mini-batches with per-centre learning rates 1/count."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    init = x if n <= init_size else x[np.sort(rng.choice(n, init_size, replace=False))]
    centroids = kmeans_pp(init, k, rng)
    counts = np.zeros(k, dtype=np.float64)
    for _ in range(iterations if n > k else 0):
        batch = x[rng.integers(n, size=min(batch_size, n))]
        nearest = np.argmax(batch @ centroids.T, axis=1)
        hits = np.bincount(nearest, minlength=k).astype(np.float64)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, nearest, batch)
        seen = hits > 0
        counts[seen] += hits[seen]
        rate = hits[seen] / counts[seen]  # Sculley's per-centre step, applied to the batch mean
        means = sums[seen] / hits[seen, None]
        centroids[seen] = ((1 - rate)[:, None] * centroids[seen] + rate[:, None] * means).astype(np.float32)
        centroids = normalise(centroids).astype(np.float32)
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, its cosine) for each unit row of ``x`` (in float64, so that
    how BLAS blocks a batch cannot flip a row between two centroids short of an exact tie)."""
    sims = np.asarray(x, dtype=np.float64) @ np.asarray(centroids, dtype=np.float64).T
    best = np.argmax(sims, axis=1)
    return best.astype(np.int32), sims[np.arange(len(x)), best]

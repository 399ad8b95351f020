#!/usr/bin/python3
"""Times in scipy what BenchmarkCompare20x1M times in Go.

    /usr/bin/python3 internal/drift/testdata/bench_scipy.py

For 20 numeric features of 1,000,000 reference and 1,000,000 current rows
(normal-ish samples from splitmix64, as the Go benchmark, every other
feature shifted by 0.01): ks_2samp (method="asymp", as scipy's auto picks
above 10,000 rows), wasserstein_distance divided by the reference's np.std,
and PSI, jensenshannon and Hellinger on 10 reference-quantile bins plus
under/overflow bins. Data generation is outside the timer.
"""

import os
import sys
import time

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import quantile_edges, bin_counts, psi, hellinger, sample  # noqa: E402


def columns(features, rows):
    ref, cur = [], []
    for f in range(features):
        shift = 0.01 if f % 2 == 1 else 0.0
        ref.append(sample({"kind": "normal", "seed": 1000 + 2 * f, "n": rows}))
        cur.append(sample({"kind": "normal", "seed": 1001 + 2 * f, "n": rows, "loc": shift}))
    return ref, cur


def compare(ref, cur):
    out = []
    for a, b in zip(ref, cur):
        a = a[~np.isnan(a)]
        b = b[~np.isnan(b)]
        ks = stats.ks_2samp(a, b, method="asymp")
        w = stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)
        edges = quantile_edges(a, 10)
        rc, cc = bin_counts(edges, a), bin_counts(edges, b)
        out.append((ks.statistic, ks.pvalue, w, psi(rc, cc), jensenshannon(rc, cc), hellinger(rc, cc)))
    return out


def main():
    features, rows = 20, 1000000
    ref, cur = columns(features, rows)
    best = float("inf")
    for _ in range(int(os.environ.get("REPEAT", "3"))):
        t0 = time.perf_counter()
        compare(ref, cur)
        best = min(best, time.perf_counter() - t0)
    print(f"scipy: {features} features x {rows} rows: {best:.3f} s (best of runs)")


if __name__ == "__main__":
    main()

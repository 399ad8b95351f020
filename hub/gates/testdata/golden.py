#!/usr/bin/python3
"""Golden values for hub/gates' statistical tests, from scipy 1.10.

Run from hub/gates:  /usr/bin/python3 testdata/golden.py > testdata/golden.json

Mann–Whitney: each case is a pair of latency histograms ({bucket: count});
they are expanded into one value per request (the bucket index, so that
every request of a bucket ties) and judged by
scipy.stats.mannwhitneyu(canary, baseline, alternative="greater",
method="asymptotic", use_continuity=True).

Two-proportion: the pooled one-sided z-test by its formula, p from
scipy.stats.norm.sf; the script asserts that z² equals the Pearson
chi-square of the 2×2 table (scipy.stats.chi2_contingency without Yates'
correction), an independent check of the formula.
"""

import json
import math
import random
import sys

import numpy as np
import scipy
from scipy import stats

BUCKETS = 104


def random_hist(rng, centre, spread, n):
    """n requests around bucket centre, spread buckets wide (heavily tied)."""
    h = {}
    for _ in range(n):
        b = min(BUCKETS - 1, max(0, int(round(rng.gauss(centre, spread)))))
        h[b] = h.get(b, 0) + 1
    return h


def expand(h):
    return np.repeat(np.array(sorted(h), dtype=float), [h[b] for b in sorted(h)])


def mann_whitney_cases():
    rng = random.Random(20240611)
    cases = [
        ("identical", {40: 50, 41: 120, 42: 80, 44: 10}, {40: 50, 41: 120, 42: 80, 44: 10}),
        ("one bucket, no variance", {40: 300}, {40: 700}),
        ("one request each, same bucket", {10: 1}, {10: 1}),
        ("one request each, canary slower", {11: 1}, {10: 1}),
        ("one request each, canary faster", {10: 1}, {11: 1}),
        ("disjoint, canary slower", {50: 30, 51: 20}, {40: 100, 41: 60}),
        ("disjoint, canary faster", {40: 100, 41: 60}, {50: 30, 51: 20}),
        ("canary 4 buckets slower", {44: 200, 45: 400, 46: 150}, {40: 2000, 41: 4000, 42: 1500}),
        ("small shift, large counts", {40: 20000, 41: 30010, 42: 9990}, {40: 20100, 41: 30000, 42: 9900}),
        ("overlapping, one bucket each side", {40: 5, 41: 5}, {41: 5, 42: 5}),
        ("first and last buckets", {0: 7, 103: 3}, {0: 9, 103: 1}),
        ("uneven sizes", {30: 1, 31: 2}, {28: 400, 29: 900, 30: 700, 31: 300, 32: 100}),
    ]
    for i in range(12):
        c = rng.uniform(20, 80)
        shift = rng.choice([0, 0, 0.5, 1, 2, 4, -1])
        spread = rng.uniform(0.5, 6)
        nc = rng.choice([5, 30, 200, 1000, 5000])
        nb = rng.choice([5, 30, 200, 1000, 20000])
        cases.append((f"random {i}: shift {shift}, spread {spread:.2f}",
                      random_hist(rng, c + shift, spread, nc), random_hist(rng, c, spread, nb)))
    out = []
    for name, canary, baseline in cases:
        r = stats.mannwhitneyu(expand(canary), expand(baseline), alternative="greater",
                               method="asymptotic", use_continuity=True)
        out.append({"name": name, "canary": canary, "baseline": baseline,
                    "u": float(r.statistic), "p": float(r.pvalue)})
    return out


def two_proportion_cases():
    cases = [
        ("20% vs 0.5%", 200, 1000, 50, 10000),
        ("equal rates", 10, 1000, 20, 2000),
        ("canary better", 5, 1000, 50, 1000),
        ("slightly worse", 12, 1000, 10, 1000),
        ("tiny groups", 1, 3, 0, 4),
        ("large groups", 5200, 1000000, 50000, 10000000),
        ("all failed on one side", 100, 100, 0, 100),
        ("half and half", 50, 100, 45, 100),
    ]
    out = []
    for name, k1, n1, k2, n2 in cases:
        pooled = (k1 + k2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (k1 / n1 - k2 / n2) / se
        p = float(stats.norm.sf(z))
        chi2, _, _, _ = stats.chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
        assert math.isclose(z * z, chi2, rel_tol=1e-9), (name, z * z, chi2)
        out.append({"name": name, "k1": k1, "n1": n1, "k2": k2, "n2": n2, "z": z, "p": p})
    return out


def main():
    json.dump({
        "generator": f"testdata/golden.py, scipy {scipy.__version__}, numpy {np.__version__}",
        "mann_whitney": mann_whitney_cases(),
        "two_proportion": two_proportion_cases(),
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

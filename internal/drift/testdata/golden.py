#!/usr/bin/python3
"""Writes golden.json: expected values from scipy 1.10 for internal/drift.

Run with the system Python, which has scipy 1.10.1 and numpy:

    /usr/bin/python3 internal/drift/testdata/golden.py

Samples are not stored: both this script and golden_test.go generate them
from a seed with splitmix64, using only arithmetic that both languages do
identically (integer mixing mod 2**64, exact conversion to [0, 1), and sums
and products evaluated in the same order).
"""

import json
import math
import os
import sys

import numpy as np
import scipy
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

assert scipy.__version__.startswith("1.10"), scipy.__version__

GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def uniforms(seed, count):
    """The first count outputs of splitmix64 seeded with seed, in [0, 1)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, count + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * GAMMA
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def sample(spec):
    """Generates a sample; golden_test.go's sample() mirrors this."""
    kind, seed, n = spec["kind"], spec["seed"], spec["n"]
    loc, scale = spec.get("loc", 0.0), spec.get("scale", 1.0)
    if kind == "normal":  # Irwin-Hall: sum of 12 uniforms minus 6
        u = uniforms(seed, 12 * n).reshape(n, 12)
        z = u[:, 0].copy()
        for k in range(1, 12):
            z = z + u[:, k]
        z = z - 6.0
        return loc + scale * z
    if kind == "uniform":
        return loc + scale * uniforms(seed, n)
    if kind == "ties":  # integers 0..9 (scaled): heavy ties
        return loc + scale * np.floor(uniforms(seed, n) * 10.0)
    if kind == "exponential":  # inverse CDF; log computed in Go too, so
        # the values can differ in the last bit: used only with statistics
        # insensitive to that (none yet).
        raise ValueError(kind)
    raise ValueError(kind)


def categories(seed, n, thresholds):
    """Category index per value: the number of thresholds a uniform is ≥ to."""
    u = uniforms(seed, n)
    return np.searchsorted(np.asarray(thresholds), u, side="right")


def f(x):
    x = float(x)
    assert math.isfinite(x), x
    return x


def quantile_edges(ref, bins):
    s = np.sort(ref)
    edges = []
    for k in range(bins + 1):
        e = float(np.quantile(s, k / bins))  # linear, numpy's default
        if k == bins:
            e = float(np.nextafter(s[-1], np.inf))
        if not edges or e > edges[-1]:
            edges.append(e)
    return edges


def bin_counts(edges, values):
    # bin = number of edges at or below the value
    idx = np.searchsorted(np.asarray(edges), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(float).tolist()


def psi(r, c):
    r = np.asarray(r, float) / np.sum(r)
    c = np.asarray(c, float) / np.sum(c)
    r = np.maximum(r, 1e-4)
    c = np.maximum(c, 1e-4)
    return float(np.sum((c - r) * np.log(c / r)))


def hellinger(r, c):
    p = np.asarray(r, float) / np.sum(r)
    q = np.asarray(c, float) / np.sum(c)
    return float(np.sqrt(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)) / np.sqrt(2))


def chi2(r, c):
    table = np.array([r, c], float)
    table = table[:, table.sum(axis=0) > 0]  # categories empty in both: dropped
    res = stats.chi2_contingency(table)  # correction=True: Yates for dof 1
    return {"statistic": f(res[0]), "p_value": f(res[1]), "dof": int(res[2])}


def ztest(x1, n1, x2, n2):
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return {"statistic": z, "p_value": f(2 * stats.norm.sf(abs(z)))}


def fdr_bh(p):
    """statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]."""
    p = np.asarray(p, float)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    n = len(p)
    raw = ps / (np.arange(1, n + 1) / n)
    adj = np.minimum.accumulate(raw[::-1])[::-1]
    adj = np.minimum(adj, 1)
    out = np.empty(n)
    out[order] = adj
    return out.tolist()


def bonferroni(p):
    return np.minimum(np.asarray(p, float) * len(p), 1).tolist()


def main():
    out = {"scipy": scipy.__version__, "numpy": np.__version__}

    # Two-sample KS and Wasserstein on generated samples.
    N = lambda seed, n, loc=0.0, scale=1.0: {"kind": "normal", "seed": seed, "n": n, "loc": loc, "scale": scale}
    pairs = [
        (N(1, 20), N(2, 20)),
        (N(3, 20), N(4, 35, 0.5)),
        (N(5, 50), N(6, 80, 0.25, 1.5)),
        (N(7, 100), N(8, 100, 0.3)),
        (N(9, 300), N(10, 300)),
        ({"kind": "ties", "seed": 11, "n": 200}, {"kind": "ties", "seed": 12, "n": 150}),
        ({"kind": "ties", "seed": 13, "n": 1000}, {"kind": "ties", "seed": 14, "n": 1000, "loc": 1.0}),
        ({"kind": "uniform", "seed": 15, "n": 999}, {"kind": "uniform", "seed": 16, "n": 1001, "loc": 0.05}),
        (N(17, 1000), N(18, 1500, 0.1)),
        (N(19, 3000), N(20, 3000, 0.05)),
        (N(21, 10000), N(22, 8000, 0.02)),
        (N(23, 10000), N(24, 10000)),
        (N(25, 10001), N(26, 9000, 0.03)),
        (N(27, 20000), N(28, 15000, 0.05)),
        (N(29, 100000), N(30, 100000)),
        (N(31, 100000), N(32, 100000, 0.02)),
        (N(33, 1000000), N(34, 1000000)),
        (N(35, 1000000), N(36, 1000000, 0.003)),
        (N(37, 1000000), N(38, 1000000, 0.5, 2.0)),
        (N(39, 1000000), N(40, 300, 0.1)),
        ({"kind": "ties", "seed": 41, "n": 1000000}, {"kind": "ties", "seed": 42, "n": 500000}),
        ({"kind": "ties", "seed": 43, "n": 50000, "scale": 0.25}, {"kind": "ties", "seed": 44, "n": 40000, "scale": 0.25}),
    ]
    ks_cases = []
    for a_spec, b_spec in pairs:
        a, b = sample(a_spec), sample(b_spec)
        modes = ["auto", "asymp"]
        if max(len(a), len(b)) <= 20000:
            modes.append("exact")
        results = {}
        for mode in modes:
            r = stats.ks_2samp(a, b, method=mode)
            en = len(a) * len(b) / (len(a) + len(b))
            used = "exact" if (mode == "exact" or (mode == "auto" and max(len(a), len(b)) <= 10000)) else "asymp"
            results[mode] = {"statistic": f(r.statistic), "p_value": f(r.pvalue), "method": used}
        ks_cases.append({
            "ref": a_spec, "cur": b_spec, "ks": results,
            "wasserstein": f(stats.wasserstein_distance(a, b)),
            "std": f(np.std(a)),
        })
        print("ks", a_spec["n"], b_spec["n"], results["auto"], file=sys.stderr)
    out["ks"] = ks_cases

    # KSPValue on given statistics, including exact-path corner cases.
    pv = []
    for n, m, d in [(5, 7, 0.6), (10, 10, 0.3), (10, 10, 1.0), (1, 1, 1.0), (3, 4, 0.25),
                    (40, 60, 0.2), (400, 600, 0.1), (1000, 1000, 0.05), (7, 9000, 0.3),
                    (2000, 2500, 0.04), (10000, 9999, 0.02), (10000, 10000, 0.0123)]:
        for mode in ["exact", "asymp"]:
            if n == 1 and m == 1 and mode == "asymp":
                continue  # round(en) = 0: scipy gives nan, we document p = 1
            # ks_2samp only takes samples; reproduce its p-value path directly.
            g = math.gcd(n, m)
            if mode == "exact":
                ok, dd, p = stats._stats_py._attempt_exact_2kssamp(n, m, g, d, "two-sided")
                if not ok:
                    continue
            else:
                hi, lo = max(n, m), min(n, m)
                en = hi * lo / (hi + lo)
                p = stats.kstwo.sf(d, np.round(en))
            pv.append({"n": n, "m": m, "d": d, "mode": mode, "p_value": f(np.clip(p, 0, 1))})
    out["ks_pvalue"] = pv

    # The one-sample Kolmogorov distribution (kstwo) and smirnov over a grid
    # that reaches every branch.
    kt = []
    for n in [1, 2, 3, 5, 10, 20, 50, 100, 140, 141, 200, 500, 1000, 5000, 20000,
              100000, 100001, 500000, 1500000]:
        for t in [0.3, 0.6, 0.9, 1.5]:  # n·x
            kt.append((n, t / n))
        for z in [0.2, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 18.0]:  # x·√n
            x = z / math.sqrt(n)
            if x < 1:
                kt.append((n, x))
        for x in [0.4, 0.5, 0.7, 0.95, 1 - 0.5 / n]:
            if 0 < x < 1:
                kt.append((n, x))
    out["kstwo"] = [{"n": n, "x": x, "sf": f(stats.kstwo.sf(x, n))} for n, x in kt]
    sm = []
    for n in [2, 3, 10, 11, 50, 141, 1000, 50000, 500000, 1000000, 1000001]:
        for x in [0.5 / n, 1.0 / n, 1.5 / n, 0.5 / math.sqrt(n), 1 / math.sqrt(n),
                  2 / math.sqrt(n), 5 / math.sqrt(n), 0.3, 0.5, 0.9, 1 - 1.0 / n]:
            if 0 < x < 1:
                sm.append({"n": n, "x": x, "sf": f(special.smirnov(n, x))})
    out["smirnov"] = sm

    # Count-based statistics.
    counts = [
        ([10, 20, 30, 40], [12, 18, 33, 37]),
        ([100, 0, 50, 25], [90, 10, 0, 30]),
        ([1, 1], [1, 1]),
        ([500, 500], [400, 600]),
        ([5, 0, 0, 7, 3], [0, 0, 4, 9, 1]),  # one category empty in both
        ([1000, 2000, 0, 3000, 1, 0, 9], [800, 2500, 3, 2800, 0, 0, 20]),
        ([3, 7], [8, 2]),  # dof 1: Yates
        ([0.5, 2.5, 7], [1, 1, 1]),
    ]
    cc = []
    for r, c in counts:
        cc.append({"ref": r, "cur": c, "psi": psi(r, c),
                   "jensen_shannon": f(jensenshannon(r, c)),
                   "hellinger": hellinger(r, c), "chi2": chi2(r, c)})
    out["counts"] = cc

    # Quantile edges and bin counts.
    qb = []
    for a_spec, b_spec, bins in [
        (N(51, 1000), N(52, 800, 0.2), 10),
        (N(53, 997), N(54, 1200, -0.1, 0.8), 7),
        ({"kind": "ties", "seed": 55, "n": 500}, {"kind": "ties", "seed": 56, "n": 700, "loc": 0.5}, 10),
        ({"kind": "ties", "seed": 57, "n": 300, "scale": 0.0, "loc": 2.0}, N(58, 100, 2.0), 10),
    ]:
        a, b = sample(a_spec), sample(b_spec)
        edges = quantile_edges(a, bins)
        rc, cc_ = bin_counts(edges, a), bin_counts(edges, b)
        qb.append({"ref": a_spec, "cur": b_spec, "bins": bins, "edges": edges,
                   "ref_counts": rc, "cur_counts": cc_, "psi": psi(rc, cc_),
                   "jensen_shannon": f(jensenshannon(rc, cc_)),
                   "hellinger": hellinger(rc, cc_)})
    out["bins"] = qb

    # Categorical samples: category counts from uniform thresholds.
    cat = []
    for seed_r, seed_c, n_r, n_c, thr_r, thr_c in [
        (61, 62, 800, 900, [0.2, 0.5, 0.9], [0.25, 0.5, 0.85]),
        (63, 64, 5000, 4000, [0.5], [0.55]),
        (65, 66, 300, 200, [0.3], [0.3]),
    ]:
        k = len(thr_r) + 1
        r = np.bincount(categories(seed_r, n_r, thr_r), minlength=k).astype(float).tolist()
        c = np.bincount(categories(seed_c, n_c, thr_c), minlength=k).astype(float).tolist()
        e = {"seed_ref": seed_r, "seed_cur": seed_c, "n_ref": n_r, "n_cur": n_c,
             "thr_ref": thr_r, "thr_cur": thr_c, "ref_counts": r, "cur_counts": c,
             "chi2": chi2(r, c), "psi": psi(r, c),
             "jensen_shannon": f(jensenshannon(r, c)), "hellinger": hellinger(r, c)}
        if k == 2:
            e["z"] = ztest(r[0], n_r, c[0], n_c)
        cat.append(e)
    out["categorical"] = cat

    # Two-proportion z-tests.
    out["ztest"] = [dict(zip(["ref_pos", "ref_n", "cur_pos", "cur_n"], a), **ztest(*a))
                    for a in [(30, 100, 45, 100), (500, 1000, 520, 1100), (1, 50, 9, 60),
                              (9999, 10000, 9990, 10000)]]

    # Multiple-testing corrections.
    corr = []
    for p in [[0.01, 0.04, 0.03, 0.005, 0.5], [0.2, 0.2, 0.01, 0.9], [1e-10, 0.05],
              [0.04, 0.04, 0.04, 0.04], [0.3]]:
        corr.append({"p": p, "bonferroni": bonferroni(p), "fdr_bh": fdr_bh(p)})
    out["corrections"] = corr

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()

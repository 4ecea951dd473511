#!/usr/bin/env python3
"""Compare two runs of the detector on the NAB development corpus beyond the sweep.

    python3 bench/nab/halves.py --base out/base --new out/nab [--data ../shared/nab]

For the standard profile it prints, for the base and the new results (the anomaly_score
column of each): the sweep; the score at fixed anomaly_score thresholds (0.30 to 0.45);
the mean reward of the windows found at the sweep threshold and the windows found late
(reward below 0.8) or only by one of the two; and random halves of the corpus (200 draws
of 14 of the 29 files, seed 1; the sweep is re-chosen on each half): the mean and median
gain of new over base and the share of halves won. It uses nabscore.py's own rules (it
imports it), so the numbers are the scorer's.
"""

import argparse
import importlib.util
import os
import random
import statistics


def load_scorer(data):
    spec = importlib.util.spec_from_file_location("nabscore", os.path.join(data, "nabscore.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def corpus(ns, data, results):
    labels_path = os.path.join(data, "labels", "combined_windows.json")
    labels = ns.read_labels(labels_path)
    names = sorted(labels)
    paths = ns.find_results(results, names, names)
    out = []
    for n in names:
        s = ns.load_series(os.path.join(data, "data"), n, labels[n], labels_path)
        ns.load_results(s, paths[n], False)
        out.append(s)
    return out


class Flat:
    """The scored rows of one file with a positive anomaly_score, and its live windows."""

    def __init__(self, ns, f, s):
        self.name = s.name
        self.live = len(ns.live_windows(s))
        self.windows = len(s.windows)
        self.rows = [(s.scores[i], None if w is None else (f, w), v, i)
                     for i, w, v in ns.row_values(s) if s.scores[i] > 0]


P = {"tp": 1.0, "fp": 0.11, "fn": 1.0}


def score_at(ns, flats, thr):
    live = sum(x.live for x in flats)
    t = ns.Tally(P, live)
    for x in flats:
        for sc, key, v, _ in x.rows:
            if sc >= thr:
                t.add(key, v)
    null, perfect = -P["fn"] * live, P["tp"] * sum(x.windows for x in flats)
    return ns.normalise(t.raw(), null, perfect), t


def sweep(ns, flats):
    live = sum(x.live for x in flats)
    null, perfect = -P["fn"] * live, P["tp"] * sum(x.windows for x in flats)
    rows = sorted((r for x in flats for r in x.rows), key=lambda r: -r[0])
    t = ns.Tally(P, live)
    best, thr = t.raw(), None
    k = 0
    while k < len(rows):
        level = rows[k][0]
        while k < len(rows) and rows[k][0] == level:
            t.add(rows[k][1], rows[k][2])
            k += 1
        if t.raw() > best:
            best, thr = t.raw(), level
    return ns.normalise(best, null, perfect), thr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/nab")
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    ns = load_scorer(a.data)
    runs = {}
    for tag, d in (("base", a.base), ("new", a.new)):
        runs[tag] = [Flat(ns, f, s) for f, s in enumerate(corpus(ns, a.data, d))]
    fixed = [0.30, 0.31, 0.33, 0.35, 0.40, 0.45]
    found = {}
    for tag in ("base", "new"):
        fl = runs[tag]
        sw, thr = sweep(ns, fl)
        cols = [score_at(ns, fl, th)[0] for th in fixed]
        _, t = score_at(ns, fl, thr)
        found[tag] = t.best
        rew = list(t.best.values())
        print("%-4s sweep %.2f at %.4f  TP %d FP %d  mean TP reward %.3f  late(<0.8) %d | fixed %s"
              % (tag, sw, thr, len(rew), t.fp_rows, sum(rew) / max(len(rew), 1),
                 sum(1 for r in rew if r < 0.8), " ".join("%.2f" % c for c in cols)))
    base, new = runs["base"], runs["new"]
    names = [x.name for x in base]
    for key in sorted(set(found["base"]) | set(found["new"])):
        b, n = found["base"].get(key), found["new"].get(key)
        if a.verbose or b is None or n is None or abs(b - n) > 0.02:
            print("  window %s #%d: base %s new %s" % (names[key[0]], key[1],
                  "-" if b is None else "%.3f" % b, "-" if n is None else "%.3f" % n))
    rng = random.Random(a.seed)
    gains = []
    for _ in range(a.draws):
        pick = rng.sample(range(len(base)), 14)
        gains.append(sweep(ns, [new[i] for i in pick])[0] - sweep(ns, [base[i] for i in pick])[0])
    won = sum(1 for g in gains if g > 1e-9)
    ties = sum(1 for g in gains if abs(g) <= 1e-9)
    print("halves: mean %+.2f median %+.2f won %d%% (ties %d) of %d"
          % (statistics.mean(gains), statistics.median(gains), 100 * won // len(gains), ties, len(gains)))


if __name__ == "__main__":
    main()

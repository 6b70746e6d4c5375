#!/usr/bin/env python3
"""Plots columns of the curves that `oni bench learning` writes against env steps, one panel
per column, one line per variant (mean over seeds, band = min..max).
Usage: plot_learning.py RESULTS.json[,RESULTS.json...] OUT.png [COLUMN,COLUMN...]   (default: success_rate)
RESULTS.json is the table `oni bench learning` writes; its curves are the CSV beside it with
the same stem. Several tables (a baseline from another call, say) are drawn in one figure;
each must carry its own provenance. A results file without its provenance (commit, command, presets, seeds,
budget, judge, bank) is refused: a plot nobody can trace back to a run is not a result."""
import csv
import json
import os
import sys
from collections import defaultdict

LABELS = {
    "success_rate": "success rate",
    "mean_extrinsic_return": "episode return (extrinsic)",
    "mean_score": "in-game score",
    "mean_intrinsic_return": "episode return (intrinsic)",
    "labels": "answers in the label bank",
    "labelled_share": "share of steps the judge has seen",
    "rm_accuracy_bank": "reward model accuracy (bank)",
    "rm_accuracy_gold": "reward model accuracy (gold set)",
}
FRACTIONS = {"success_rate", "labelled_share", "rm_accuracy_bank", "rm_accuracy_gold"}
# the same list as oni's PROVENANCE_KEYS (cli/src/learning.rs)
PROVENANCE_KEYS = ["commit", "command", "presets", "seeds", "budget_env_steps", "judge", "bank"]


def checked(results_path):
    try:
        with open(results_path) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{results_path}: cannot read the results ({e})")
    prov = results.get("provenance") if isinstance(results, dict) else None
    if not isinstance(prov, dict):
        sys.exit(f"{results_path}: no provenance; refusing to plot results that cannot be traced to a run "
                 "(rerun them with `oni bench learning`)")
    missing = [k for k in PROVENANCE_KEYS if prov.get(k) in (None, "", [])]
    if missing:
        sys.exit(f"{results_path}: provenance lacks {', '.join(missing)}; refusing to plot")
    curves = os.path.splitext(results_path)[0] + ".csv"
    if not os.path.exists(curves):
        sys.exit(f"{results_path}: its curves {curves} are missing")
    return curves


def main(results_paths, dst, columns):
    sources = [checked(p) for p in results_paths.split(",")]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves = {c: defaultdict(lambda: defaultdict(list)) for c in columns}
    for src in sources:
        with open(src) as f:
            for row in csv.DictReader(f):
                # means over the last 100 episodes say little before there are 100
                if int(row["episodes"]) < 100:
                    continue
                for c in columns:
                    if row.get(c):
                        curves[c][row["variant"]][row["seed"]].append((int(row["env_steps"]), float(row[c])))
    fig, axes = plt.subplots(1, len(columns), figsize=(7 * len(columns), 4.2), dpi=120, squeeze=False)
    # one colour per variant in every panel, though some panels lack a variant
    variants = sorted({v for c in columns for v in curves[c]})
    colour = {v: f"C{i}" for i, v in enumerate(variants)}
    for ax, c in zip(axes[0], columns):
        for variant, seeds in sorted(curves[c].items()):
            top = min(max(s for s, _ in pts) for pts in seeds.values())
            grid = np.linspace(0, top, 60)
            ys = np.array([np.interp(grid, [s for s, _ in pts], [r for _, r in pts]) for pts in seeds.values()])
            ax.plot(grid, ys.mean(axis=0), label=f"{variant} ({len(seeds)} seeds)", color=colour[variant])
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.2, color=colour[variant])
        ax.set_xlabel("env steps")
        ax.set_ylabel(LABELS.get(c, c))
        if c in FRACTIONS:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "success_rate").split(","))

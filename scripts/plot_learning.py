#!/usr/bin/env python3
"""Plots columns of the CSV that `oni bench learning` writes against env steps, one panel per
column, one line per variant (mean over seeds, band = min..max).
Usage: plot_learning.py CURVES.csv OUT.png [COLUMN,COLUMN...]   (default: success_rate)"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LABELS = {
    "success_rate": "success rate",
    "mean_extrinsic_return": "episode return (extrinsic)",
    "mean_score": "in-game score",
    "mean_intrinsic_return": "episode return (intrinsic)",
}


def main(src, dst, columns):
    curves = {c: defaultdict(lambda: defaultdict(list)) for c in columns}
    with open(src) as f:
        for row in csv.DictReader(f):
            # means over the last 100 episodes say little before there are 100
            if int(row["episodes"]) < 100:
                continue
            for c in columns:
                if row.get(c):
                    curves[c][row["variant"]][row["seed"]].append((int(row["env_steps"]), float(row[c])))
    fig, axes = plt.subplots(1, len(columns), figsize=(7 * len(columns), 4.2), dpi=120, squeeze=False)
    for ax, c in zip(axes[0], columns):
        for variant, seeds in curves[c].items():
            top = min(max(s for s, _ in pts) for pts in seeds.values())
            grid = np.linspace(0, top, 60)
            ys = np.array([np.interp(grid, [s for s, _ in pts], [r for _, r in pts]) for pts in seeds.values()])
            ax.plot(grid, ys.mean(axis=0), label=f"{variant} ({len(seeds)} seeds)")
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel(LABELS.get(c, c))
        if c == "success_rate":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "success_rate").split(","))

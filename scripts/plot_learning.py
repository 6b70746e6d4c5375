#!/usr/bin/env python3
"""Plots success rate against env steps per variant (mean over seeds, band = min..max)
from the CSV that `oni bench learning` writes. Usage: plot_learning.py CURVES.csv OUT.png"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(src, dst):
    curves = defaultdict(lambda: defaultdict(list))
    with open(src) as f:
        for row in csv.DictReader(f):
            # the rate over the last 100 episodes means little before there are 100
            if int(row["episodes"]) >= 100:
                curves[row["variant"]][row["seed"]].append((int(row["env_steps"]), float(row["success_rate"])))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for variant, seeds in curves.items():
        top = min(max(s for s, _ in pts) for pts in seeds.values())
        grid = np.linspace(0, top, 60)
        ys = np.array([np.interp(grid, [s for s, _ in pts], [r for _, r in pts]) for pts in seeds.values()])
        ax.plot(grid, ys.mean(axis=0), label=f"{variant} ({len(seeds)} seeds)")
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Python NLE's own speed, the reference for `oni bench env --env nethack-score`: NetHackScore
with the observation keys oni's env fills by default (glyphs, blstats, message), uniformly
random actions from the task's 23, auto-reset, for SECONDS on one core. Prints one JSON line.

    ~/.cache/oni/venv/bin/python scripts/bench_nle.py [SECONDS]"""

import json
import random
import sys
import time

import nle.env.tasks as tasks


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    env = tasks.NetHackScore(observation_keys=("glyphs", "blstats", "message"))
    rng = random.Random(1)
    n = env.action_space.n
    env.reset(seed=1)
    steps = episodes = 0
    reset_secs = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            _, _, terminated, truncated, _ = env.step(rng.randrange(n))
            steps += 1
            if terminated or truncated:
                episodes += 1
                t = time.perf_counter()
                env.reset()
                reset_secs += time.perf_counter() - t
    secs = time.perf_counter() - start
    print(json.dumps({"bench": "nle", "env": "NetHackScore", "steps": steps, "episodes": episodes,
                      "seconds": secs, "steps_per_sec": steps / secs,
                      "reset_us_mean": 1e6 * reset_secs / max(episodes, 1)}))


if __name__ == "__main__":
    main()

"""Protocol overhead: steps/s of an instant environment through one stream.

    python -m oni_env.bench --address 127.0.0.1:50061 --num-envs 64 --seconds 5

Prints one JSON line: {"num_envs": B, "steps": n, "seconds": s, "steps_per_second": x}."""

import argparse
import json
import threading
import time

import gymnasium as gym
import numpy as np

from .client import attach


class Instant(gym.Env):
    """Four float observations, two actions, episodes of 200 steps, no work per step."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self._obs = np.zeros(4, np.float32)
        self._t = 0

    def reset(self, seed=None, options=None):
        self._t = 0
        return self._obs, {}

    def step(self, action):
        self._t += 1
        return self._obs, 1.0, False, self._t >= 200, {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="127.0.0.1:50061")
    ap.add_argument("--num-envs", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--token", default=None)
    a = ap.parse_args()
    stop = threading.Event()
    timer = threading.Timer(a.seconds, stop.set)
    t0 = time.perf_counter()
    timer.start()
    r = attach(Instant, a.address, num_envs=a.num_envs, token=a.token, stop=stop, reconnect=False)
    secs = time.perf_counter() - t0
    timer.cancel()
    print(json.dumps({"num_envs": a.num_envs, "steps": r.steps, "seconds": secs, "steps_per_second": r.steps / secs}))


if __name__ == "__main__":
    main()

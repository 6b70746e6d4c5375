"""Attach CartPole to a running oni cluster (`oni run --config configs/attached-cartpole.toml`)."""

import argparse, json, statistics

import gymnasium as gym
import oni_env

ap = argparse.ArgumentParser()
ap.add_argument("--address", default="127.0.0.1:50061")
ap.add_argument("--num-envs", type=int, default=16)
ap.add_argument("--max-steps", type=int, default=None)
a = ap.parse_args()

r = oni_env.attach(lambda: gym.make("CartPole-v1"), a.address, num_envs=a.num_envs, max_steps=a.max_steps)
first, last = r.returns[:100], r.returns[-100:]
print(json.dumps({"steps": r.steps, "episodes": r.episodes, "first_100_mean": statistics.fmean(first or [0]), "last_100_mean": statistics.fmean(last or [0])}))

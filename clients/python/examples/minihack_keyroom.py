"""Attach MiniHack to a running oni cluster (`oni run --config configs/attached-minihack.toml`).
Its messages ("It's a wall.", "You see here a key.") reach the annotator as captions."""

import argparse

import gymnasium as gym
import minihack  # noqa: F401  (registers the MiniHack envs)
import oni_env

ap = argparse.ArgumentParser()
ap.add_argument("--address", default="127.0.0.1:50061")
ap.add_argument("--env", default="MiniHack-KeyRoom-S5-v0")
ap.add_argument("--num-envs", type=int, default=8)
ap.add_argument("--max-steps", type=int, default=None)
a = ap.parse_args()

keys = ("glyphs_crop", "blstats", "message")
oni_env.attach(lambda: gym.make(a.env, observation_keys=keys), a.address, num_envs=a.num_envs, max_steps=a.max_steps)

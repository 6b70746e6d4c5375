"""Attaches CartPole to an actor for a while, lets go, and attaches again, until killed: the
connection churn of `oni bench soak`. Prints one JSON line per session."""

import argparse, json, threading

import gymnasium as gym
import oni_env

ap = argparse.ArgumentParser()
ap.add_argument("--address", required=True)
ap.add_argument("--every", type=float, default=60.0, help="seconds per session")
ap.add_argument("--num-envs", type=int, default=8)
a = ap.parse_args()

session = 0
while True:
    stop = threading.Event()
    timer = threading.Timer(a.every, stop.set)
    timer.start()
    r = oni_env.attach(lambda: gym.make("CartPole-v1"), a.address, num_envs=a.num_envs, stop=stop)
    timer.cancel()
    session += 1
    print(json.dumps({"session": session, "steps": r.steps, "episodes": r.episodes}), flush=True)

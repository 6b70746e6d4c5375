"""Every kind of bad client against one actor, while a well-behaved client keeps stepping.

    python tests/bad_inputs.py --address HOST:PORT --token TOKEN

The actor must run with that token, actor.hub.max_clients = 2, and no other clients.
Exits non-zero on the first expectation that fails."""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np

import oni_env


class Box4(gym.Env):
    """Four floats, two actions; `bad` picks a defect."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    steps = 0  # shared count of the good client's steps

    def __init__(self, bad=None, count=False):
        self.bad, self.count, self.t = bad, count, 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.count:
            Box4.steps += 1
        obs = np.full(4, 0.1 * self.t, np.float32)
        reward = 1.0
        if self.t >= 3 and self.bad == "shape":
            obs = np.zeros(5, np.float32)
        if self.t >= 3 and self.bad == "nan_obs":
            obs[2] = np.nan
        if self.t >= 3 and self.bad == "nan_reward":
            reward = float("inf")
        return obs, reward, False, self.t >= 50, {}


class Image(Box4):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


class Three(Box4):
    action_space = gym.spaces.Discrete(3)


def good_client(address, token, stop, count, errors):
    try:
        oni_env.attach(lambda: Box4(count=count), address, num_envs=4, token=token, stop=stop)
    except Exception as e:  # reported by the main thread
        errors.append(e)


def expect(exc_type, needle, fn):
    try:
        fn()
    except exc_type as e:
        assert needle in str(e), f"{exc_type.__name__} without `{needle}`: {e}"
        print(f"ok: {exc_type.__name__}: {e.details}", flush=True)
        return
    raise AssertionError(f"expected {exc_type.__name__} ({needle})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    addr, tok = a.address, a.token
    stop_a, errors = threading.Event(), []
    good = threading.Thread(target=good_client, args=(addr, tok, stop_a, True, errors), daemon=True)
    good.start()

    def still_served(case):
        before = Box4.steps
        deadline = time.time() + 20
        while Box4.steps < before + 200:
            assert not errors, f"the good client failed after {case}: {errors[0]}"
            assert time.time() < deadline, f"the good client stalled after {case}"
            time.sleep(0.05)

    still_served("start")
    once = dict(address=addr, num_envs=2, reconnect=False, max_steps=400)
    cases = [
        ("wrong token", oni_env.AuthenticationError, "wrong token", lambda: oni_env.attach(Box4, token="nope", **once)),
        ("no token", oni_env.AuthenticationError, "requires a token", lambda: oni_env.attach(Box4, token="", **once)),
        ("old protocol", oni_env.ProtocolVersionError, "protocol v0", lambda: oni_env.attach(Box4, token=tok, protocol_version=0, **once)),
        ("image space", oni_env.InvalidArgumentError, "`obs`", lambda: oni_env.attach(Image, token=tok, **once)),
        ("action space", oni_env.InvalidArgumentError, "num_actions", lambda: oni_env.attach(Three, token=tok, **once)),
        ("wrong shape", oni_env.InvalidArgumentError, "observations[0] (`obs`)", lambda: oni_env.attach(lambda: Box4("shape"), token=tok, **once)),
        ("NaN observation", oni_env.InvalidArgumentError, "NaN", lambda: oni_env.attach(lambda: Box4("nan_obs"), token=tok, **once)),
        ("infinite reward", oni_env.InvalidArgumentError, "`rewards`", lambda: oni_env.attach(lambda: Box4("nan_reward"), token=tok, **once)),
        ("too many envs", oni_env.ResourceExhaustedError, "num_envs", lambda: oni_env.attach(Box4, address=addr, num_envs=100_000, token=tok, reconnect=False)),
    ]
    for case, exc, needle, fn in cases:
        expect(exc, needle, fn)
        still_served(case)

    # a second good client fills the actor's two client places; a third is refused
    stop_b = threading.Event()
    second = threading.Thread(target=good_client, args=(addr, tok, stop_b, False, errors), daemon=True)
    second.start()
    time.sleep(1.0)
    expect(oni_env.ResourceExhaustedError, "max_clients", lambda: oni_env.attach(Box4, token=tok, **once))
    stop_b.set()
    second.join(10)
    still_served("too many clients")

    # a client killed mid-episode
    code = f"import oni_env, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); from bad_inputs import Box4; oni_env.attach(Box4, {addr!r}, num_envs=8, token={tok!r})"
    victim = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(3.0)
    assert victim.poll() is None, "the victim client exited by itself"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    print("ok: killed a client mid-episode", flush=True)
    still_served("a killed client")

    # and the place it held is free again
    r = oni_env.attach(Box4, token=tok, **once)
    assert r.steps >= 400, r
    print("ok: a new client attaches after the others left", flush=True)
    stop_a.set()
    good.join(10)
    assert not errors, errors
    print(f"good client stepped {Box4.steps} times through every case")


if __name__ == "__main__":
    main()

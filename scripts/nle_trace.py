"""Plays a list of actions in Python NLE and prints one JSON line per frame: the reset frame,
then each step's. The reference side of oni's NetHack parity test (env/tests/nle_parity.rs).

    python nle_trace.py TASK CORE DISP MAX_STEPS [task|oni] < actions

TASK is oni's env name (nethack-score, nethack-staircase, ...); CORE and DISP are NLE's seeds
(set with reseed=False and fix_moon_phase=True, so every episode replays the same game); the
actions are indices into the task's 23 actions (or, with `oni`, those and ONI's five more: cast,
quaff, pray, pick up, pay), one per line. After an episode ends the env is
reset and the next frame is the new episode's first."""

import json
import sys

import nle.env.tasks as tasks
from nle import nethack

TASKS = {
    "nethack-score": tasks.NetHackScore,
    "nethack-staircase": tasks.NetHackStaircase,
    "nethack-staircase-pet": tasks.NetHackStaircasePet,
    "nethack-oracle": tasks.NetHackOracle,
    "nethack-gold": tasks.NetHackGold,
    "nethack-eat": tasks.NetHackEat,
    "nethack-scout": tasks.NetHackScout,
}


def frame(obs, reward, done, kind):
    msg = bytes(obs["message"]).split(b"\0", 1)[0].decode("latin-1")
    return {
        "kind": kind,
        "reward": float(reward),
        "done": bool(done),
        "message": msg,
        "blstats": [int(x) for x in obs["blstats"]],
        "glyphs": [int(x) for x in obs["glyphs"].ravel()],
        # oni's tty cell: character + 256 * colour
        "tty": [int(c) + 256 * (int(k) & 15) for c, k in zip(obs["tty_chars"].ravel(), obs["tty_colors"].ravel())],
        "cursor": [int(x) for x in obs["tty_cursor"]],
    }


def main() -> None:
    task, core, disp, max_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    actions = tasks.TASK_ACTIONS
    if len(sys.argv) > 5 and sys.argv[5] == "oni":
        extra = (nethack.Command.CAST, nethack.Command.QUAFF, nethack.Command.PRAY, nethack.Command.PICKUP, nethack.Command.PAY)
        actions = tuple(actions) + extra
    env = TASKS[task](
        observation_keys=("glyphs", "blstats", "message", "tty_chars", "tty_colors", "tty_cursor"),
        max_episode_steps=max_steps,
        fix_moon_phase=True,
        actions=actions,
    )
    env.unwrapped.seed(core, disp, reseed=False)
    obs, _ = env.reset()
    out = sys.stdout
    out.write(json.dumps(frame(obs, 0.0, False, "reset")) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        obs, reward, terminated, truncated, _ = env.step(int(line))
        done = terminated or truncated
        out.write(json.dumps(frame(obs, reward, done, "step")) + "\n")
        if done:
            obs, _ = env.reset()
            out.write(json.dumps(frame(obs, 0.0, False, "reset")) + "\n")
    env.close()


if __name__ == "__main__":
    main()

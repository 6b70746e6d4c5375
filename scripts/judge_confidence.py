#!/usr/bin/env python3
"""How sure is the judge? Reads P(true) from the answer token's log-probabilities for every
caption of one part (dev by default) of a judging set, and scores each threshold on it.

    oni bench judge --llm rule --sets nethack-score --answers /tmp/items.jsonl   # captions, gold, part
    oni config show --config configs/nethack-score-small-oni.toml > /tmp/config.toml
    scripts/judge_confidence.py /tmp/items.jsonl /tmp/config.toml http://127.0.0.1:8090 [dev|test]

Asks as the annotator does (chat API, the config's prompt and goal, the answer grammar,
greedy) with `logprobs` on, which llama-server and vLLM both accept. Look at dev only when
choosing anything from it (docs/judging.md).
"""
import concurrent.futures
import json
import math
import sys
import tomllib
import urllib.request

GRAMMAR = r'root ::= "{\"helpful\": " ("true" | "false") "}"'


def p_true(url, prompt):
    body = {"model": "judge", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": 16, "grammar": GRAMMAR, "logprobs": True, "top_logprobs": 10}
    req = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    choice = json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]
    for tok in choice["logprobs"]["content"]:
        if tok["token"].strip() in ("true", "false"):
            mass = {}
            for alt in tok["top_logprobs"]:
                key = alt["token"].strip()
                mass[key] = mass.get(key, 0.0) + math.exp(alt["logprob"])
            t, f = mass.get("true", 0.0), mass.get("false", 0.0)
            return t / (t + f) if t + f > 0 else 0.5
    raise ValueError(f"no true/false token in {choice}")


def kappa(tp, fp, fn, tn):
    n = tp + fp + fn + tn
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n / n
    return (po - pe) / (1 - pe) if pe < 1 else 0.0


def main():
    items_file, config_file, url = sys.argv[1:4]
    part = sys.argv[4] if len(sys.argv) > 4 else "dev"
    cfg = tomllib.load(open(config_file, "rb"))["prompts"]
    items = [json.loads(line) for line in open(items_file)]
    items = [r for r in items if r["part"] == part]
    prompts = [cfg["classification"].replace("{goal}", cfg["goal"]).replace("{message}", r["caption"]) for r in items]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        probs = list(pool.map(lambda p: p_true(url, p), prompts))
    for r, p in sorted(zip(items, probs), key=lambda x: -x[1]):
        print(json.dumps({"p_true": round(p, 3), "gold": r["gold"], "caption": r["caption"]}))
    print(f"| pay when P(true) >= | helpful right | helpful wrong | kappa |  ({part}, {len(items)} captions)")
    for th in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        tp = sum(p >= th and r["gold"] == "helpful" for r, p in zip(items, probs))
        fp = sum(p >= th and r["gold"] != "helpful" for r, p in zip(items, probs))
        fn = sum(p < th and r["gold"] == "helpful" for r, p in zip(items, probs))
        tn = len(items) - tp - fp - fn
        print(f"| {th} | {tp} | {fp} | {kappa(tp, fp, fn, tn):.3f} |")


if __name__ == "__main__":
    main()

"""rl-eval against an independent computation: numpy statistics, and the
length-controlled win rate fitted with torch autograd + LBFGS on the same
penalized objective (man/rl-eval.1)."""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

BIN = os.environ.get("RL_BIN", "bin")
failed = 0


def report(ok, name, why=""):
    global failed
    print(("ok " if ok else "not ok ") + name + ("" if ok else ": " + why))
    failed += not ok


try:
    import numpy as np
    import torch
except ImportError as e:
    print("ok rl-eval reference # SKIP %s" % e)
    sys.exit(0)

rng = random.Random(5)
tmp = tempfile.mkdtemp()
recs, base = [], []
for i in range(60):
    n = rng.randint(1, 6)
    lens = [rng.randint(1, 40) for _ in range(n)]
    rw = [round(rng.gauss(0.02 * l, 1), 3) for l in lens]
    rec = {"id": "q%d" % i, "iter": 1 + i % 3, "rewards": rw,
           "response_ids": [[7] * l for l in lens], "responses": ["é" * l for l in lens],
           "finish": [rng.choice(["stop", "length"]) for _ in range(n)],
           "logps": [rng.uniform(-9, -1) for _ in range(n)], "ref_logps": [rng.uniform(-9, -1) for _ in range(n)]}
    recs.append(rec)
    bl = [rng.randint(1, 40) for _ in range(4)]
    base.append({"id": "q%d" % i, "rewards": [round(rng.gauss(0.3, 1), 3) for _ in bl], "response_ids": [[1] * l for l in bl]})
recs.append({"id": "pair1", "iter": 1, "chosen_reward": 2.0, "rejected_reward": 1.0})
recs.append({"id": "pair2", "iter": 1, "chosen_reward": 0.0, "rejected_reward": 1.0})
recs.append({"id": "pair3", "iter": 1, "chosen_reward": 1.0, "rejected_reward": 1.0})
for name, rows in (("s.jsonl", recs), ("b.jsonl", base)):
    with open(os.path.join(tmp, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

p = subprocess.run([os.path.join(BIN, "rl-eval"), "--by", "iter", "--format", "json", "--baseline",
                    os.path.join(tmp, "b.jsonl"), os.path.join(tmp, "s.jsonl")], capture_output=True, text=True)
report(p.returncode == 0, "rl-eval --format json runs", p.stderr)
out = {row["iter"]: row for row in map(json.loads, p.stdout.splitlines())}
baseline = {b["id"]: b for b in base}


def lc_reference(win, gap):
    win = torch.tensor(win, dtype=torch.float64)
    gap = torch.tensor(gap, dtype=torch.float64)
    sd = gap.std(unbiased=False)
    x = torch.tanh(gap / sd) if sd > 0 else torch.zeros_like(gap)
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    lam = 1e-4 * len(win)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = w[0] + w[1] * x
        nll = torch.nn.functional.binary_cross_entropy_with_logits(z, win, reduction="sum")
        loss = nll + 0.5 * lam * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.sigmoid(w[0]).item()


for it in (1, 2, 3):
    rows = [r for r in recs if r.get("iter") == it and "rewards" in r]
    allr = np.array([x for r in rows for x in r["rewards"]])
    first = np.array([r["rewards"][0] for r in rows])
    best = np.array([max(r["rewards"]) for r in rows])
    kl = np.array([a - b for r in rows for a, b in zip(r["logps"], r["ref_logps"])])
    toks = np.array([len(x) for r in rows for x in r["response_ids"]])
    stop = np.mean([f == "stop" for r in rows for f in r["finish"]])
    win, gap = [], []
    for r in rows:
        b = baseline[r["id"]]
        for j in range(min(len(r["rewards"]), len(b["rewards"]))):
            x, y = r["rewards"][j], b["rewards"][j]
            win.append(1.0 if x > y else 0.5 if x == y else 0.0)
            gap.append(len(r["response_ids"][j]) - len(b["response_ids"][j]))
    want = {"records": len(rows) + (3 if it == 1 else 0), "samples": len(allr),
            "reward_mean": allr.mean(), "reward_median": float(np.median(allr)), "reward_std": allr.std(),
            "first_mean": first.mean(), "first_median": float(np.median(first)), "first_std": first.std(),
            "best_of_n_mean": best.mean(), "len_tokens_mean": toks.mean(), "len_chars_mean": toks.mean(),
            "finish_stop": stop, "finish_length": 1 - stop, "kl": kl.mean(),
            "baseline_samples": len(win), "win_rate": float(np.mean(win)), "lc_win_rate": lc_reference(win, gap)}
    if it == 1:
        want.update({"pairs": 3, "pair_accuracy": 1 / 3, "pair_ties": 1, "pair_margin_mean": 0.0})
    got = out[it]
    bad = [k for k, v in want.items() if got.get(k) is None or abs(got[k] - v) > 1e-6 * max(1, abs(v))]
    report(not bad, "iter %d: every statistic matches the reference" % it,
           "; ".join("%s: %s vs %s" % (k, got.get(k), want[k]) for k in bad))

# LC win rate removes a pure length effect: wins explained by length alone
win, gap = [], []
for i in range(400):
    g = rng.uniform(-50, 50)
    win.append(1.0 if rng.random() < 1 / (1 + math.exp(-g / 10)) else 0.0)
    gap.append(g)
with open(os.path.join(tmp, "l.jsonl"), "w") as f, open(os.path.join(tmp, "lb.jsonl"), "w") as fb:
    for i, (w, g) in enumerate(zip(win, gap)):
        L = int(60 + g)
        f.write(json.dumps({"id": "x%d" % i, "rewards": [w], "response_ids": [[0] * L]}) + "\n")
        fb.write(json.dumps({"id": "x%d" % i, "rewards": [0.5], "response_ids": [[0] * 60]}) + "\n")
p = subprocess.run([os.path.join(BIN, "rl-eval"), "-f", "json", "-b", os.path.join(tmp, "lb.jsonl"),
                    os.path.join(tmp, "l.jsonl")], capture_output=True, text=True)
row = json.loads(p.stdout)
ref = lc_reference([1.0 if w > 0.5 else 0.0 for w in win], [int(60 + g) - 60 for g in gap])
report(abs(row["lc_win_rate"] - ref) < 1e-6, "LC win rate equals the torch fit on a length-driven sample",
       "%s vs %s" % (row["lc_win_rate"], ref))
report(abs(row["lc_win_rate"] - 0.5) < 0.08 and abs(row["win_rate"] - 0.5) < 0.1,
       "wins explained by length alone give an LC win rate near 1/2", json.dumps(row))
sys.exit(1 if failed else 0)

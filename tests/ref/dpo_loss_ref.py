"""Reference DPO-family losses with torch autograd, independent of the C code.

Writes (or, with --check FILE, compares against) a JSON list of cases:
{loss, beta, label_smoothing, nll_coef, pc, pr, rc, rr, len_c, len_r, L, dpc, dpr}
where L is the pair's loss and dpc/dpr its derivatives by the summed policy
log-probs of the chosen/rejected responses. The formulas follow TRL's
DPOTrainer: sigmoid (with label smoothing), hinge, IPO on token-averaged
log-probs, and RPO's NLL term on the chosen response's mean token NLL.
"""
import json
import random
import sys

import torch
import torch.nn.functional as F


def pair_loss(kind, beta, eps, nll, pc, pr, rc, rr, lc, lr):
    if kind == "ipo":
        logits = (pc / lc - pr / lr) - (rc / lc - rr / lr)
        loss = (logits - 1 / (2 * beta)) ** 2
    else:
        logits = (pc - pr) - (rc - rr)
        if kind == "sigmoid":
            loss = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
        else:
            loss = torch.relu(1 - beta * logits)
    if nll:
        loss = loss + nll * (-pc / lc)
    return loss


def cases():
    rng = random.Random(1234)
    out = []
    for kind in ("sigmoid", "hinge", "ipo"):
        for _ in range(12):
            c = {"loss": kind, "beta": rng.choice([0.01, 0.1, 0.5, 2.0]),
                 "label_smoothing": rng.choice([0.0, 0.0, 0.1, 0.3]) if kind == "sigmoid" else 0.0,
                 "nll_coef": rng.choice([0.0, 0.0, 1.0]),
                 "pc": rng.uniform(-80, -1), "pr": rng.uniform(-80, -1),
                 "rc": rng.uniform(-80, -1), "rr": rng.uniform(-80, -1),
                 "len_c": rng.randint(1, 40), "len_r": rng.randint(1, 40)}
            out.append(c)
    out.append({"loss": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "nll_coef": 0.0,
                "pc": -10.0, "pr": -10.0, "rc": -10.0, "rr": -10.0, "len_c": 3, "len_r": 3})   # log 2
    out.append({"loss": "sigmoid", "beta": 5.0, "label_smoothing": 0.0, "nll_coef": 0.0,
                "pc": -1.0, "pr": -400.0, "rc": -300.0, "rr": -2.0, "len_c": 3, "len_r": 3})  # saturated
    for c in out:
        pc = torch.tensor(c["pc"], dtype=torch.float64, requires_grad=True)
        pr = torch.tensor(c["pr"], dtype=torch.float64, requires_grad=True)
        L = pair_loss(c["loss"], c["beta"], c["label_smoothing"], c["nll_coef"], pc, pr,
                      torch.tensor(c["rc"], dtype=torch.float64), torch.tensor(c["rr"], dtype=torch.float64),
                      c["len_c"], c["len_r"])
        L.backward()
        c.update(L=L.item(), dpc=pc.grad.item(), dpr=pr.grad.item())
    return out


if __name__ == "__main__":
    got = cases()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        want = json.load(open(sys.argv[2]))
        bad = [i for i, (a, b) in enumerate(zip(got, want))
               if any(abs(a[k] - b[k]) > 1e-12 * max(1, abs(b[k])) for k in ("L", "dpc", "dpr"))]
        print("ok dpo loss golden equals a fresh torch run" if not bad and len(got) == len(want)
              else "not ok dpo loss golden equals a fresh torch run: cases %s differ" % bad)
        sys.exit(1 if bad else 0)
    json.dump(got, sys.stdout, indent=0)

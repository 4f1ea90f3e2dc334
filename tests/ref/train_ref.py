#!/usr/bin/python3
"""Reference for the trainers' losses through the whole model: the mean
DPO-family loss over a batch of pairs (sigmoid with label smoothing, IPO,
hinge, RPO's NLL term) and the SFT token-mean NLL, with torch autograd
gradients of every parameter. The model is llama_ref.py's (written from the
formulas; transformers is not used); the loss formulas are TRL's.

  train_ref.py make DIR           a random GQA model with tied embeddings, and DIR/data.json
  train_ref.py grads DIR OUT      OUT.safetensors: for each case C, "C.loss" and "C.grad.<param>"
  train_ref.py make-rm DIR        a random GQA reward model (score head) and DIR/data.json
  train_ref.py grads-rm DIR OUT   "rm.loss", "rm.grad.<param>" of the mean Bradley-Terry loss
                                  -log sigmoid(r_c - r_r - margin), and "rm.scores" of every sequence
"""
import json
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as L  # noqa: E402

CASES = {   # name: (loss, beta, label_smoothing, nll_coef)
    "sigmoid": ("sigmoid", 0.1, 0.0, 0.0),
    "cdpo": ("sigmoid", 0.5, 0.2, 0.0),
    "ipo": ("ipo", 0.3, 0.0, 0.0),
    "hinge": ("hinge", 0.7, 0.0, 0.0),
    "rpo": ("sigmoid", 0.1, 0.0, 0.5),
}


def make(d):
    os.makedirs(d, exist_ok=True)
    L.make(d, "gqa_tied")
    os.remove(os.path.join(d, "inputs.json"))
    r = random.Random(11)
    V = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    ids = lambda lo, hi: [r.randrange(V) for _ in range(r.randint(lo, hi))]
    pairs = [{"prompt": ids(1, 6), "chosen": ids(1, 7), "rejected": ids(1, 7),
              "ref_chosen": r.uniform(-40, -5), "ref_rejected": r.uniform(-40, -5)} for _ in range(5)]
    sft = [{"prompt": ids(1, 6), "response": ids(1, 9)} for _ in range(4)]
    json.dump({"pairs": pairs, "sft": sft}, open(os.path.join(d, "data.json"), "w"))


def seq_logp(c, W, prompt, resp):
    head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
    ids = prompt + resp
    lp = torch.log_softmax(L.forward(c, W, ids[:-1]) @ head.t(), dim=-1)
    return torch.stack([lp[len(prompt) - 1 + j, y] for j, y in enumerate(resp)]).sum()


def dpo_loss(kind, beta, eps, nll, pc, pr, rc, rr, lc, lr):
    if kind == "ipo":
        z = (pc / lc - pr / lr) - (rc / lc - rr / lr)
        loss = (z - 1 / (2 * beta)) ** 2
    else:
        z = (pc - pr) - (rc - rr)
        loss = (-F.logsigmoid(beta * z) * (1 - eps) - F.logsigmoid(-beta * z) * eps if kind == "sigmoid"
                else torch.relu(1 - beta * z))
    return loss + (nll * (-pc / lc) if nll else 0)


def grads(d, out_path):
    c = json.load(open(os.path.join(d, "config.json")))
    data = json.load(open(os.path.join(d, "data.json")))
    out = {}
    for case, (kind, beta, eps, nll) in list(CASES.items()) + [("sft", (None, None, None, None))]:
        W = L.st_read(os.path.join(d, "model.safetensors"))
        for t in W.values():
            t.requires_grad_(True)
        if case == "sft":
            nll_sum = sum(-seq_logp(c, W, e["prompt"], e["response"]) for e in data["sft"])
            loss = nll_sum / sum(len(e["response"]) for e in data["sft"])
        else:
            losses = [dpo_loss(kind, beta, eps, nll, seq_logp(c, W, p["prompt"], p["chosen"]),
                               seq_logp(c, W, p["prompt"], p["rejected"]), p["ref_chosen"], p["ref_rejected"],
                               len(p["chosen"]), len(p["rejected"])) for p in data["pairs"]]
            loss = torch.stack(losses).mean()
        loss.backward()
        out[case + ".loss"] = loss.detach().reshape(1)
        for n, t in W.items():
            out[case + ".grad." + n] = t.grad
    L.st_write(out_path, {k: v.detach() for k, v in out.items()})


def make_rm(d):
    os.makedirs(d, exist_ok=True)
    L.make(d, "score_head")
    os.remove(os.path.join(d, "inputs.json"))
    r = random.Random(12)
    V = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    ids = lambda lo, hi: [r.randrange(V) for _ in range(r.randint(lo, hi))]
    pairs = [{"prompt": ids(1, 6), "chosen": ids(1, 7), "rejected": ids(1, 7),
              "margin": r.choice([0.0, 0.5, -0.25])} for _ in range(6)]
    json.dump({"pairs": pairs}, open(os.path.join(d, "data.json"), "w"))


def grads_rm(d, out_path):
    c = json.load(open(os.path.join(d, "config.json")))
    data = json.load(open(os.path.join(d, "data.json")))
    W = L.st_read(os.path.join(d, "model.safetensors"))
    for t in W.values():
        t.requires_grad_(True)
    score = lambda seq: (L.forward(c, W, seq)[-1] @ W["score.weight"].t())[0]
    scores, losses = [], []
    for p in data["pairs"]:
        rc, rr = score(p["prompt"] + p["chosen"]), score(p["prompt"] + p["rejected"])
        scores += [rc, rr]
        losses.append(-F.logsigmoid(rc - rr - p["margin"]))
    loss = torch.stack(losses).mean()
    loss.backward()
    out = {"rm.loss": loss.detach().reshape(1), "rm.scores": torch.stack(scores).detach()}
    for n, t in W.items():
        out["rm.grad." + n] = t.grad
    L.st_write(out_path, {k: v.detach() for k, v in out.items()})


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd = {"make": make, "grads": grads, "make-rm": make_rm, "grads-rm": grads_rm}[sys.argv[1]]
    cmd(*sys.argv[2:])

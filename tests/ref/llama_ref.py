#!/usr/bin/python3
"""An independent PyTorch implementation of the Llama family (Hugging Face
semantics, written from the formulas; transformers is not used) that produces
the golden outputs the C model is checked against.

  llama_ref.py make CASE_DIR CASE      write config.json + model.safetensors (random)
  llama_ref.py run CASE_DIR OUT.safetensors
      read the model and CASE_DIR/inputs.json, write: logits, logp, dlogp (of a
      loss mixing a weighted token sum and a DPO term), score/dscore for a score
      head, grad.<param> for every parameter, and adamw.<param>: the weights
      after ten torch.optim.AdamW steps (clipping, warmup + cosine schedule)
      driven by fixed gradients derived from grad.<param>.
  llama_ref.py logp CASE_DIR < RECORDS.jsonl > EXPECTED.jsonl
      what rl-logp adds to each record: ref_chosen_logp / ref_rejected_logp for
      pairs (prompt_ids, chosen_ids, rejected_ids), ref_logps for generations
      (prompt_ids, response_ids): sums of response-token log-probs.

The AdamW recipe (shared with tests/unit/test_model_parity.c), the trainers':
  lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on matrices and 0 on
  norm weights and biases (the Hugging Face Trainer's groups), clip_grad_norm 0.05,
  schedule: warmup 3 steps then cosine to 0 at step 10 (HF formulas),
  gradient at step k (0-based) = grad * (1 - 0.3 k) (signs flip after step 3).
"""
import json
import math
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)

# ---- safetensors (a minimal reader/writer) ----
DT = {"F32": np.float32, "F16": np.float16}


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = data[base + b:base + e]
        if t["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DT[t["dtype"]]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(t["shape"]).copy())
    return out


def bf16_round(x):
    """float32 -> nearest-even bfloat16 bits"""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2")


def st_write(path, tensors, dtype="F32"):
    header, chunks, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().numpy() if torch.is_tensor(t) else t, dtype=np.float32)
        raw = bf16_round(a).tobytes() if dtype == "BF16" else a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ---- the configs under test ----
BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=97, rms_norm_eps=1e-6, rope_theta=10000.0,
            max_position_embeddings=256, tie_word_embeddings=False, torch_dtype="float32",
            bos_token_id=1, eos_token_id=2)
CASES = {
    # MHA, untied, weights stored in bf16 (the loader upcasts)
    "mha_untied": dict(architectures=["LlamaForCausalLM"], model_type="llama", torch_dtype="bfloat16"),
    # GQA, tied, head_dim != hidden / heads
    "gqa_tied": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=2,
                     head_dim=12, tie_word_embeddings=True),
    # Qwen2: q/k/v biases, one KV head, tied
    "qwen2_bias": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", num_key_value_heads=1,
                       tie_word_embeddings=True, vocab_size=131, rope_theta=1000000.0),
    # llama3 rope scaling (all three frequency bands), Llama attention/mlp biases, untied
    "llama3_rope": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=2,
                        head_dim=16, rope_theta=500000.0, attention_bias=True, mlp_bias=True,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=256)),
    # reward model: scalar head on the last token
    "score_head": dict(architectures=["LlamaForSequenceClassification"], model_type="llama",
                       num_key_value_heads=2, num_labels=1),
}
LENS = {"mha_untied": [9, 4, 13], "gqa_tied": [11, 6, 8, 3], "qwen2_bias": [5, 12],
        "llama3_rope": [16, 7, 10], "score_head": [6, 10, 3]}


def param_names(c):
    """(name, shape, init) in checkpoint order (weights_layout.h)."""
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", H // nh)
    qwen = c["model_type"] == "qwen2"
    qkv_b = qwen or c.get("attention_bias", False)
    o_b = (not qwen) and c.get("attention_bias", False)
    mlp_b = c.get("mlp_bias", False)
    out = [("model.embed_tokens.weight", [V, H], "w")]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.append((p + "input_layernorm.weight", [H], "n"))
        for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            out.append((p + f"self_attn.{proj}_proj.weight", [rows, H], "w"))
            if qkv_b:
                out.append((p + f"self_attn.{proj}_proj.bias", [rows], "b"))
        out.append((p + "self_attn.o_proj.weight", [H, nh * hd], "w"))
        if o_b:
            out.append((p + "self_attn.o_proj.bias", [H], "b"))
        out.append((p + "post_attention_layernorm.weight", [H], "n"))
        for proj, shape in (("gate", [I, H]), ("up", [I, H]), ("down", [H, I])):
            out.append((p + f"mlp.{proj}_proj.weight", shape, "w"))
            if mlp_b:
                out.append((p + f"mlp.{proj}_proj.bias", [shape[0]], "b"))
    out.append(("model.norm.weight", [H], "n"))
    if "SequenceClassification" in c["architectures"][0]:
        out.append(("score.weight", [c.get("num_labels", 1), H], "w"))
    elif not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", [V, H], "w"))
    return out


def make(case_dir, case):
    c = dict(BASE)
    c.update(CASES[case])
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    w = {}
    for name, shape, kind in param_names(c):
        r = torch.randn(shape, generator=g)
        # larger than the usual 0.02 so that every nonlinearity is exercised
        w[name] = 1 + 0.2 * r if kind == "n" else (0.1 if kind == "b" else 0.25) * r
    with open(f"{case_dir}/config.json", "w") as f:
        json.dump(c, f, indent=1)
    st_write(f"{case_dir}/model.safetensors", w, "BF16" if c["torch_dtype"] == "bfloat16" else "F32")
    lens = LENS[case]
    seqs = [torch.randint(0, c["vocab_size"], (n,), generator=g).tolist() for n in lens]
    with open(f"{case_dir}/inputs.json", "w") as f:
        json.dump({"seqs": seqs, "prompt": [min(2, n - 1) for n in lens]}, f)


# ---- the model ----
def rope_inv_freq(c, hd):
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = c.get("rope_scaling")
    if not rs:
        return inv
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > lo_wl, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < hi_wl) * ~(wavelen > lo_wl)
    return torch.where(medium, smoothed, inv_l)


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def forward(c, W, ids):
    """hidden states after the final norm, [n, H], for one sequence"""
    H, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", H // nh)
    n = len(ids)
    eps = c["rms_norm_eps"]
    inv = rope_inv_freq(c, hd)
    freqs = torch.arange(n).float()[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((n, n), float("-inf")).triu(1)

    def lin(x, name):
        y = x @ W[name + ".weight"].t()
        return y + W[name + ".bias"] if name + ".bias" in W else y

    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        q = lin(h, p + "self_attn.q_proj").view(n, nh, hd).transpose(0, 1)
        k = lin(h, p + "self_attn.k_proj").view(n, nkv, hd).transpose(0, 1)
        v = lin(h, p + "self_attn.v_proj").view(n, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        s = q @ k.transpose(1, 2) * hd ** -0.5 + mask
        a = torch.softmax(s, dim=-1) @ v
        x = x + lin(a.transpose(0, 1).reshape(n, nh * hd), p + "self_attn.o_proj")
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        m = torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj")
        x = x + lin(m, p + "mlp.down_proj")
    return rmsnorm(x, W["model.norm.weight"], eps)


def cosine_lr(step, warmup=3, total=10):
    if step < warmup:
        return step / max(1, warmup)
    prog = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * 0.5 * 2 * prog)))


def run(case_dir, out_path):
    with open(f"{case_dir}/config.json") as f:
        c = json.load(f)
    with open(f"{case_dir}/inputs.json") as f:
        inp = json.load(f)
    W = st_read(f"{case_dir}/model.safetensors")
    names = [n for n, _, _ in param_names(c)]
    assert sorted(names) == sorted(W), "parameter names differ from the checkpoint"
    for t in W.values():
        t.requires_grad_(True)
    score_head = "SequenceClassification" in c["architectures"][0]
    g = torch.Generator().manual_seed(7)
    seqs, prompt = inp["seqs"], inp["prompt"]
    out = {"tokens": torch.tensor(sum(seqs, [])).float(), "lens": torch.tensor([len(s) for s in seqs]).float()}
    if score_head:
        scores = torch.stack([forward(c, W, s)[-1] @ W["score.weight"].t() for s in seqs])
        u = torch.randn(scores.shape, generator=g)
        loss = (u * scores).sum()
        out.update(score=scores, dscore=u)
    else:
        head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
        logits, logps, targets = [], [], []
        for s, np_ in zip(seqs, prompt):
            lg = forward(c, W, s) @ head.t()
            lp = torch.log_softmax(lg, dim=-1)
            tg = [-1] * np_ + s[np_ + 1:] + [-1]     # next token; prompt and last position masked
            lpt = torch.stack([lp[t, y] if y >= 0 else lp[t, 0] * 0 for t, y in enumerate(tg)])
            logits.append(lg)
            logps.append(lpt)
            targets += tg
        logp = torch.cat(logps)
        logp.retain_grad()
        wts = torch.randn(logp.shape, generator=g) * torch.tensor([t >= 0 for t in targets]).float()
        # DPO term on sequences 0 (chosen) and 1 (rejected), beta 0.1, reference = 0.7 * policy
        n0, n1 = len(seqs[0]), len(seqs[1])     # through `logp`, so that logp.grad is complete
        sums = torch.stack([logp[:n0].sum(), logp[n0:n0 + n1].sum()])
        ref = sums.detach() * 0.7
        dpo = -torch.nn.functional.logsigmoid(0.1 * ((sums[0] - ref[0]) - (sums[1] - ref[1])))
        loss = (wts * logp).sum() + dpo
        out.update(logits=torch.cat(logits), logp=logp, targets=torch.tensor(targets).float())
    loss.backward()
    if not score_head:
        out["dlogp"] = logp.grad
    for n in names:
        out["grad." + n] = W[n].grad
    # ten AdamW steps on fixed gradients (the recipe in the docstring)
    P = [W[n].detach().clone().requires_grad_(True) for n in names]
    G = [W[n].grad.detach().clone() for n in names]
    groups = [{"params": [p for p in P if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in P if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr)
    for k in range(10):
        for p, g0 in zip(P, G):
            p.grad = g0 * (1 - 0.3 * k)
        torch.nn.utils.clip_grad_norm_(P, 0.05)
        opt.step()
        sched.step()
    for n, p in zip(names, P):
        out["adamw." + n] = p
    st_write(out_path, {k: v.detach() for k, v in out.items()})


def seq_logp(c, W, prompt, resp):
    if not resp:
        return 0.0
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    ids = prompt + resp
    with torch.no_grad():
        lp = torch.log_softmax(forward(c, W, ids[:-1]) @ head.t(), dim=-1)
    return float(sum(lp[len(prompt) - 1 + j, y].double() for j, y in enumerate(resp)))


def logp_records(case_dir):
    with open(f"{case_dir}/config.json") as f:
        c = json.load(f)
    W = st_read(f"{case_dir}/model.safetensors")
    for line in sys.stdin:
        r = json.loads(line)
        if "response_ids" in r:
            out = {"ref_logps": [seq_logp(c, W, r["prompt_ids"], x) for x in r["response_ids"]]}
        else:
            out = {"ref_chosen_logp": seq_logp(c, W, r["prompt_ids"], r["chosen_ids"]),
                   "ref_rejected_logp": seq_logp(c, W, r["prompt_ids"], r["rejected_ids"])}
        print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "logp":
        logp_records(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

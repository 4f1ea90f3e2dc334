#!/usr/bin/env python3
"""The peer of bench/gpu_bench.c: the same shapes in PyTorch on the same GPU,
in the same run (tests/gpu/run calls both).

  - bf16 matmul rate (8192^3, bf16 in and out), the MFU denominator;
  - training step of the same Llama config: bf16 autocast over fp32 master
    weights, fused AdamW, flash attention through scaled_dot_product_attention;
    and a step of 4 such micro-batches (gradient accumulation, one update);
  - decode tokens/s at batch 1 and 64 after a 128-token prompt, with a KV
    cache, fp32 weights (the bytes rlflow reads) and bf16 weights; and with
    bf16 weights and cache after a 2048-token prompt (a long context, where
    the cache's bytes weigh).

A minimal Llama written from the formulas (RMSNorm, rotate-half RoPE, GQA,
SwiGLU), not transformers, so that the work is the same as rlflow's.
Prints "key value" lines like gpu_bench.
  gpu_torch.py [config.json] [batch] [seq] [decode_steps]
"""
import json
import math
import sys
import time

import os

import torch
import torch.nn.functional as F

# RL_TORCH_DEVICE=cpu: a smoke test of this script where there is no GPU
DEV = os.environ.get("RL_TORCH_DEVICE", "cuda")


def now_synced():
    if DEV == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def sdpa(q, k, v, causal):
    """Grouped-query attention: torch's own GQA path where it has one."""
    try:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    except (TypeError, AttributeError):    # older torch (the CPU smoke test)
        g = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if causal:
            n, c = s.shape[-2], s.shape[-1]
            s = s.masked_fill(torch.ones(n, c, dtype=torch.bool, device=s.device).triu(c - n + 1), float("-inf"))
        return s.softmax(-1) @ v


class Llama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.H, self.nh = c["hidden_size"], c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads", self.nh)
        self.hd = c.get("head_dim", self.H // self.nh)
        self.eps = c.get("rms_norm_eps", 1e-6)
        F_, V, L = c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)
        self.embed = torch.nn.Embedding(V, self.H)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            l = torch.nn.Module()
            l.ln1 = torch.nn.Parameter(torch.ones(self.H))
            l.ln2 = torch.nn.Parameter(torch.ones(self.H))
            l.q, l.k, l.v = lin(self.H, self.nh * self.hd), lin(self.H, self.nkv * self.hd), lin(self.H, self.nkv * self.hd)
            l.o = lin(self.nh * self.hd, self.H)
            l.gate, l.up, l.down = lin(self.H, F_), lin(self.H, F_), lin(F_, self.H)
            self.layers.append(l)
        self.norm = torch.nn.Parameter(torch.ones(self.H))
        self.head = lin(self.H, V)
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2).float() / self.hd))
        ang = torch.outer(torch.arange(4096).float(), inv)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1), persistent=False)
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1), persistent=False)

    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def rope(self, x, pos):
        c, s = self.cos[pos].to(x.dtype), self.sin[pos].to(x.dtype)
        h = x.shape[-1] // 2
        return x * c + torch.cat([-x[..., h:], x[..., :h]], -1) * s

    def attn(self, l, x, pos, cache=None, li=0):
        B, S, _ = x.shape
        q = self.rope(l.q(x).view(B, S, self.nh, self.hd).transpose(1, 2), pos)
        k = self.rope(l.k(x).view(B, S, self.nkv, self.hd).transpose(1, 2), pos)
        v = l.v(x).view(B, S, self.nkv, self.hd).transpose(1, 2)
        if cache is None:
            o = sdpa(q, k, v, True)
        else:
            kc, vc, n = cache
            kc[li, :, :, n:n + S] = k
            vc[li, :, :, n:n + S] = v
            k, v = kc[li, :, :, :n + S], vc[li, :, :, :n + S]
            o = sdpa(q, k, v, S > 1)
        return l.o(o.transpose(1, 2).reshape(B, S, -1))

    def forward(self, ids, pos, cache=None):
        x = self.embed(ids)
        for i, l in enumerate(self.layers):
            x = x + self.attn(l, self.rms(x, l.ln1), pos, cache, i)
            h = self.rms(x, l.ln2)
            x = x + l.down(F.silu(l.gate(h)) * l.up(h))
        return self.head(self.rms(x, self.norm))


def matmul_tflops():
    n = 8192 if DEV == "cuda" else 512
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = 1e30
    for _ in range(10):
        t0 = now_synced()
        a @ b
        best = min(best, now_synced() - t0)
    return 2 * n**3 / best / 1e12


def train(m, c, B, S, peak, accum=1, tag=""):
    """accum micro-batches of B x S tokens a step, one AdamW update (the
    trainers' gradient accumulation: backward adds into .grad)"""
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, **({"fused": True} if DEV == "cuda" else {}))
    ids = torch.randint(0, c["vocab_size"], (B, S + 1), device=DEV)
    pos = torch.arange(S, device=DEV)
    best = 1e30
    for r in range(4):
        t0 = now_synced()
        for _ in range(accum):
            with torch.autocast(DEV, dtype=torch.bfloat16):
                logits = m(ids[:, :-1], pos)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)) / accum
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t = now_synced() - t0
        if r > 0:
            best = min(best, t)
    n_params = sum(p.numel() for p in m.parameters()) - m.embed.weight.numel()
    q_dim = m.nh * m.hd
    flops = accum * (6 * n_params * B * S + 6.0 * S * S * q_dim * len(m.layers) * B)
    print(f"torch_train{tag}_step_s {best:.4f}")
    print(f"torch_train{tag}_tokens_per_s {accum * B * S / best:.0f}")
    print(f"torch_train{tag}_mfu {flops / best / 1e12 / peak:.3f}")
    del opt


@torch.inference_mode()
def decode(m, c, B, steps, dtype, tag, P=128):
    mm = m.to(dtype)
    L = len(m.layers)
    kc = torch.zeros(L, B, m.nkv, P + steps + 1, m.hd, device=DEV, dtype=dtype)
    vc = torch.zeros_like(kc)
    # one prompt prefilled, its cache copied to every sequence (as rlflow's
    # benchmark forks it): a batch of long prompts' logits would not fit
    ids = torch.randint(0, c["vocab_size"], (1, P), device=DEV)
    mm(ids, torch.arange(P, device=DEV), (kc[:, :1], vc[:, :1], 0))
    kc[:, 1:, :, :P] = kc[:, :1, :, :P]
    vc[:, 1:, :, :P] = vc[:, :1, :, :P]
    tok = torch.randint(0, c["vocab_size"], (B, 1), device=DEV)
    t0 = 0
    for k in range(steps):
        if k == 2:
            t0 = now_synced()
        n = P + k
        mm(tok, torch.tensor([n], device=DEV), (kc, vc, n))
    dt = (now_synced() - t0) / (steps - 2)
    print(f"torch_decode_b{B}_{tag}_tokens_per_s {B / dt:.0f}")


def main():
    cfg = sys.argv[1] if len(sys.argv) > 1 else "tests/data/configs/tinyllama-1.1b.json"
    B = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    S = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 34
    if DEV == "cuda" and not torch.cuda.is_available():
        print("skip torch sees no GPU")
        return
    c = json.load(open(cfg))
    torch.manual_seed(0)
    print(f"torch_version {torch.__version__}")
    peak = matmul_tflops()
    print(f"torch_matmul_bf16_tflops {peak:.1f}")
    m = Llama(c).to(DEV)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    sys.stdout.flush()
    train(m, c, B, S, peak)
    sys.stdout.flush()
    train(m, c, B, S, peak, 4, "_accum4")
    sys.stdout.flush()
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        for B_ in (1, 64):
            decode(m, c, B_, steps, dtype, tag)
            sys.stdout.flush()
    for B_ in (1, 64):
        decode(m, c, B_, steps, torch.bfloat16, "bf16_ctx2048", 2048)
        sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""rl-import against the Python `gguf` package (llama.cpp's reference reader).

0. rl-import's usage and errors (no package needed).
1. Synthetic (needs `gguf`): a small llama GGUF written with gguf.GGUFWriter
   whose weights use every type rlflow dequantizes (F32 F16 BF16 Q4_0 Q4_1
   Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS, random blocks), imported with rl-import
   --dtype f32: every tensor equals gguf.quants.dequantize, q_proj/k_proj
   under the inverse of the converter's permutation; the four pre-tokenizers
   load in HF `tokenizers` (if installed) and encode a corpus as rl-tok does.
2. SmolLM2-135M-Instruct (needs build/models/SmolLM2-135M-Instruct.Q4_1.gguf
   from pipelines/get-smollm2; about 25 s on 2 cores; RL_REAL=0 skips it):
   every tensor as in 1; the un-permutation checked independently: logits of
   a forward pass on the raw GGUF weights with llama.cpp's interleaved-pair
   RoPE equal those of tests/ref/llama_ref.py (HF rotate-half) on the imported
   weights; the imported tokenizer in HF `tokenizers` equals rl-tok on a
   corpus; rl-logp equals llama_ref on the imported model within 1e-4.
Each part skips, saying so, when what it needs is absent.

   test_gguf_ref.py --greedy [N]   prints greedy answers to a few chat prompts
   (reference model on build/models/smollm2-135m-instruct) instead of testing.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.environ.get("RL_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))
BIN = os.environ.get("RL_BIN", os.path.join(ROOT, "bin"))
MODELS = os.path.join(ROOT, "build", "models")
GGUF_FILE = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")

# gguf and tokenizers come from build/venv (scripts/pydeps); torch and numpy
# from the system, so the venv's packages go last on the path.
for sp in sorted(__import__("glob").glob(os.path.join(ROOT, "build", "venv", "lib", "python3*", "site-packages"))):
    if sp not in sys.path:
        sys.path.append(sp)
import numpy as np
try:
    import gguf
except ImportError as e:
    gguf = None
    GGUF_MISSING = f"python package gguf not importable ({e}); scripts/pydeps gguf installs it"
try:
    import tokenizers
except ImportError:
    tokenizers = None

sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
failed = 0


def report(name, ok, why=""):
    global failed
    print(("ok " if ok else "not ok ") + name + ("" if ok or not why else ": " + str(why)[:300]), flush=True)
    failed += not ok


def skip(name, why):
    print(f"ok {name} # SKIP {why}", flush=True)


Q = gguf.GGMLQuantizationType if gguf else None


def hf_name(gname):
    """GGUF tensor name -> HF name (the mapping rl-import implements)"""
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if gname in top:
        return top[gname]
    _, layer, rest = gname.split(".", 2)
    part = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
            "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    base, kind = rest.rsplit(".", 1)
    return f"model.layers.{layer}.{part[base]}.{kind}"


def unpermute(w, n_head):
    """inverse of llama.cpp's permute: reshape(n_head, 2, D/2, ...).swapaxes(1, 2)"""
    d = w.shape[0] // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(path):
    """name -> fp32 array in PyTorch order (GGUF dims reversed), via gguf's dequantize"""
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        out[t.name] = (gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32),
                       t.tensor_type.name)
    return r, out


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]


def import_gguf(path, out):
    p = subprocess.run([os.path.join(BIN, "rl-import"), path, "-o", out, "--dtype", "f32", "-q"],
                       capture_output=True, text=True)
    return p.returncode, p.stderr


def check_all_tensors(prefix, path, outdir):
    """every GGUF tensor vs its HF counterpart in the imported model"""
    import llama_ref
    r, G = gguf_tensors(path)
    W = llama_ref.st_read(os.path.join(outdir, "model.safetensors"))
    nh, nkv = int(field(r, "llama.attention.head_count")), int(field(r, "llama.attention.head_count_kv"))
    worst, bad, types = 0.0, [], set()
    for name, (w, tname) in G.items():
        types.add(tname)
        hn = hf_name(name)
        if hn not in W:
            bad.append(f"{hn} missing")
            continue
        if ".attn_q." in name:
            w = unpermute(w, nh)
        elif ".attn_k." in name:
            w = unpermute(w, nkv)
        got = W[hn].numpy()
        if got.shape != w.shape:
            bad.append(f"{hn}: shape {got.shape} vs {w.shape}")
            continue
        err = float(np.max(np.abs(got - w))) if w.size else 0.0
        worst = max(worst, err)
        if not err == 0.0:
            bad.append(f"{hn} ({tname}): max diff {err:g}")
    extra = set(W) - {hf_name(n) for n in G}
    report(f"{prefix}_every_tensor_equals_gguf", not bad and not extra and len(W) == len(G),
           f"{bad[:4]} extra {sorted(extra)[:4]} ({len(W)} vs {len(G)} tensors)")
    return types


# ---- 0. the tool's errors (no gguf package needed) ----

def run_import(*args):
    return subprocess.run([os.path.join(BIN, "rl-import"), *args], capture_output=True, text=True)


def test_cli():
    if not os.path.exists(os.path.join(BIN, "rl-import")):
        skip("rl_import_cli", "rl-import not built")
        return
    with tempfile.TemporaryDirectory() as tmp:
        p = run_import("--help")
        report("cli_help", p.returncode == 0 and "--dtype" in p.stdout, p.stderr)
        p = run_import(os.path.join(tmp, "x.gguf"))
        report("cli_needs_output", p.returncode == 2 and "-o" in p.stderr, p.stderr)
        p = run_import("a.gguf", "-o", tmp + "/o", "--dtype", "q4")
        report("cli_bad_dtype", p.returncode == 2 and "--dtype" in p.stderr, p.stderr)
        p = run_import(os.path.join(tmp, "missing.gguf"), "-o", tmp + "/o")
        report("cli_missing_file", p.returncode == 1 and "missing.gguf" in p.stderr and p.stderr.startswith("rl-import: "),
               p.stderr)
        bad = os.path.join(tmp, "bad.gguf")
        with open(bad, "wb") as f:
            f.write(b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (0).to_bytes(8, "little"))
        p = run_import(bad, "-o", tmp + "/o")
        report("cli_bad_file_named", p.returncode == 1 and "bad.gguf" in p.stderr, p.stderr)
        report("cli_no_partial_output", sorted(os.listdir(tmp)) == ["bad.gguf"], os.listdir(tmp))
        empty = os.path.join(tmp, "empty.gguf")     # valid: no keys, no tensors
        with open(empty, "wb") as f:
            f.write(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
        p = run_import(empty, "-o", tmp + "/o")
        report("cli_not_llama_named", p.returncode == 1 and "general.architecture" in p.stderr, p.stderr)
        os.mkdir(tmp + "/exists")
        p = run_import(empty, "-o", tmp + "/exists")
        report("cli_refuses_existing_dir", p.returncode == 1 and "exists" in p.stderr, p.stderr)


# ---- 1. synthetic file ----

BYTE_CHARS = [c for c in range(ord("!"), ord("~") + 1)] + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))


def byte_vocab():
    m, n = {}, 0
    for b in range(256):
        if b in BYTE_CHARS:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + n)
            n += 1
    return [m[b] for b in range(256)]


HALF_AT = {} if not gguf else {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q4_K: [0, 2],
           Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.IQ4_NL: [0], Q.IQ4_XS: [0]}


def random_tensor(rng, qtype, rows, cols):
    """(array for GGUFWriter.add_tensor, raw_dtype) with random content and sane scales"""
    if qtype == Q.F32:
        return rng.standard_normal((rows, cols)).astype(np.float32), None
    if qtype == Q.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16), None
    if qtype == Q.BF16:
        u = (rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return u.view(np.uint8).reshape(rows, cols * 2), Q.BF16
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // block
    raw = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    for at in HALF_AT[qtype]:
        h = (rng.uniform(0.01, 1.0, nb) * rng.choice([-1, 1], nb)).astype(np.float16)
        raw[:, at:at + 2] = h.view(np.uint8).reshape(nb, 2)
    return raw.reshape(rows, cols // block * size), qtype


def llama3_rope_factors(theta, hd, factor=8.0, lo=1.0, hi=4.0, old=8192):
    """the per-frequency divisors llama.cpp's converter stores as rope_freqs.weight"""
    import math
    out = []
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi * theta ** (i / hd)
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def synthetic(path, pre, types, rope_freqs=None):
    """a 2-layer llama with hidden 256 (K-quant blocks fit), weights typed round robin"""
    H, NH, NKV, FF, L = 256, 4, 2, 512, 2
    HD = H // NH
    toks = byte_vocab() + ["Ġt", "he", "Ġthe", "in", "er", "<|im_start|>", "<|im_end|>", "<tool>"]
    ttype = [1] * (len(toks) - 3) + [3, 3, 4]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"]
    V = len(toks)
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.context_length", 512)
    w.add_uint32("llama.embedding_length", H)
    w.add_uint32("llama.block_count", L)
    w.add_uint32("llama.feed_forward_length", FF)
    w.add_uint32("llama.attention.head_count", NH)
    w.add_uint32("llama.attention.head_count_kv", NKV)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", 500000.0)
    w.add_uint32("llama.rope.dimension_count", HD)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", pre)
    w.add_array("tokenizer.ggml.tokens", toks)
    w.add_array("tokenizer.ggml.token_type", ttype)
    w.add_array("tokenizer.ggml.merges", merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", V - 3)
    w.add_uint32("tokenizer.ggml.eos_token_id", V - 2)
    w.add_bool("tokenizer.ggml.add_bos_token", pre == "llama-bpe")
    w.add_string("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    shapes = [("token_embd.weight", V, H)]
    for l in range(L):
        b = f"blk.{l}."
        shapes += [(b + "attn_norm.weight", 1, H), (b + "attn_q.weight", NH * HD, H), (b + "attn_k.weight", NKV * HD, H),
                   (b + "attn_v.weight", NKV * HD, H), (b + "attn_output.weight", H, NH * HD),
                   (b + "ffn_norm.weight", 1, H), (b + "ffn_gate.weight", FF, H), (b + "ffn_up.weight", FF, H),
                   (b + "ffn_down.weight", H, FF)]
    shapes += [("output_norm.weight", 1, H), ("output.weight", V, H)]
    rng = np.random.default_rng(5)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs)
    k = 0
    for name, rows, cols in shapes:
        if rows == 1:        # norms stay F32, 1-D
            w.add_tensor(name, rng.standard_normal(cols).astype(np.float32))
            continue
        qt = types[k % len(types)]
        k += 1
        arr, raw = random_tensor(rng, qt, rows, cols)
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return toks


CORPUS = ["Hello world", "the theater in 1234567 there", "  leading spaces\tand\ttabs\n\nnew lines  ",
          "I'm you'll they've DON'T", "naïve café Zürich 日本語 😀", "x = [1, 2, 3]; y = x**2 # 99 bottles",
          "<|im_start|>user\nhi<|im_end|>", "<tool> call", "12 345 6789 0.5e10", "\u00a0nbsp and \u3000 ideographic"]


def rl_tok(model_dir, text):
    p = subprocess.run([os.path.join(BIN, "rl-tok"), "-t", model_dir], input=text.encode(), capture_output=True)
    if p.returncode:
        return "error: " + p.stderr.decode(errors="replace").strip()
    return [int(x) for x in p.stdout.split()]


def compare_tokenizer(prefix, model_dir, corpus):
    if tokenizers is None:
        skip(prefix + "_tokenizer_hf", "python package tokenizers not installed (scripts/pydeps)")
        return
    try:
        hf = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    except Exception as e:   # noqa: BLE001 - any load failure is the finding
        report(prefix + "_tokenizer_hf_loads", False, e)
        return
    if not os.path.exists(os.path.join(BIN, "rl-tok")):
        skip(prefix + "_tokenizer_hf", "rl-tok not built")
        return
    bad = []
    for text in corpus:
        want = hf.encode(text).ids
        got = rl_tok(model_dir, text)
        if got != want:
            bad.append(f"{text[:30]!r}: rl-tok {str(got)[:60]} hf {want[:12]}")
    report(prefix + "_tokenizer_matches_hf", not bad, "; ".join(bad[:3]))


def test_type_table():
    """lib/gguf.c's block geometry table against gguf.GGML_QUANT_SIZES"""
    import re
    with open(os.path.join(ROOT, "lib", "gguf.c")) as f:
        rows = re.findall(r'\[GGML_\w+\] = \{"(\w+)", (\d+), (\d+)\}', f.read())
    bad = [n for n, blk, size in rows if gguf.GGML_QUANT_SIZES[Q[n]] != (int(blk), int(size))]
    report("type_sizes_match_gguf", len(rows) >= 20 and not bad, f"{len(rows)} rows, differ: {bad}")


def test_synthetic():
    if gguf is None:
        skip("gguf_synthetic", GGUF_MISSING)
        return
    test_type_table()
    if not os.path.exists(os.path.join(BIN, "rl-import")):
        skip("gguf_synthetic", "rl-import not built")
        return
    types = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K,
             Q.Q2_K, Q.Q3_K, Q.IQ4_NL, Q.IQ4_XS]
    with tempfile.TemporaryDirectory() as tmp:
        for i, pre in enumerate(["smollm", "llama-bpe", "qwen2", "gpt-2"]):
            path = os.path.join(tmp, f"{pre}.gguf")
            # rotate the type list so every tensor role sees several types
            synthetic(path, pre, types[i % len(types):] + types[:i % len(types)])
            out = os.path.join(tmp, pre)
            rc, err = import_gguf(path, out)
            report(f"synthetic_{pre}_imports", rc == 0, err)
            if rc:
                continue
            if i == 0:
                seen = check_all_tensors("synthetic", path, out)
                report("synthetic_covers_all_types", seen >= {t.name for t in types}, sorted(seen))
            compare_tokenizer(f"synthetic_{pre}", out, CORPUS)
        # Llama 3 rope scaling travels as rope_freqs.weight; anything else is refused by name
        f = llama3_rope_factors(500000.0, 64)
        report("synthetic_llama3_factors_nontrivial", 1.0 in f and 8.0 in f and len(set(f.tolist())) > 3, f)
        path = os.path.join(tmp, "llama3.gguf")
        synthetic(path, "llama-bpe", types, rope_freqs=f)
        rc, err = import_gguf(path, os.path.join(tmp, "llama3"))
        cfg = {}
        if rc == 0:
            with open(os.path.join(tmp, "llama3", "config.json")) as fh:
                cfg = json.load(fh)
        want = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        report("synthetic_llama3_rope_scaling", rc == 0 and cfg.get("rope_scaling") == want,
               err or cfg.get("rope_scaling"))
        f[len(f) // 2] *= 1.5
        synthetic(path, "llama-bpe", types, rope_freqs=f)
        rc, err = import_gguf(path, os.path.join(tmp, "llama3b"))
        report("synthetic_other_rope_freqs_refused", rc == 1 and "rope_freqs.weight" in err, err)


# ---- 2. SmolLM2 ----

def interleaved_forward(G, c, ids):
    """llama.cpp semantics on GGUF-layout weights: q/k rows as stored, RoPE on
    adjacent pairs (x[2i], x[2i+1]). Independent of the un-permutation."""
    import torch
    import llama_ref
    H, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, n, eps = H // nh, len(ids), c["rms_norm_eps"]
    T = {k: torch.from_numpy(v[0]) for k, v in G.items()}
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(n).float()[:, None] * inv[None, :]            # [n, hd/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):                                                     # [heads, n, hd]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    mask = torch.full((n, n), float("-inf")).triu(1)
    x = T["token_embd.weight"][torch.tensor(ids)]
    for l in range(c["num_hidden_layers"]):
        b = f"blk.{l}."
        h = llama_ref.rmsnorm(x, T[b + "attn_norm.weight"], eps)
        q = rope((h @ T[b + "attn_q.weight"].t()).view(n, nh, hd).transpose(0, 1))
        k = rope((h @ T[b + "attn_k.weight"].t()).view(n, nkv, hd).transpose(0, 1))
        v = (h @ T[b + "attn_v.weight"].t()).view(n, nkv, hd).transpose(0, 1)
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        a = torch.softmax(q @ k.transpose(1, 2) * hd ** -0.5 + mask, -1) @ v
        x = x + a.transpose(0, 1).reshape(n, nh * hd) @ T[b + "attn_output.weight"].t()
        h = llama_ref.rmsnorm(x, T[b + "ffn_norm.weight"], eps)
        m = torch.nn.functional.silu(h @ T[b + "ffn_gate.weight"].t()) * (h @ T[b + "ffn_up.weight"].t())
        x = x + m @ T[b + "ffn_down.weight"].t()
    x = llama_ref.rmsnorm(x, T["output_norm.weight"], eps)
    head = T["output.weight"] if "output.weight" in T else T["token_embd.weight"]
    return x @ head.t()


def rl_logp_vs_ref(model_dir, c, W, seqs):
    import llama_ref
    recs = [{"id": str(i), "prompt_ids": p, "response_ids": [r]} for i, (p, r) in enumerate(seqs)]   # n = 1
    lines = "".join(json.dumps(r) + "\n" for r in recs).encode()
    cat = os.path.join(BIN, "rl-cat")
    p1 = subprocess.run([cat, "-p"], input=lines, capture_output=True)
    p2 = subprocess.run([os.path.join(BIN, "rl-logp"), "-m", model_dir, "-q", "--force"], input=p1.stdout,
                        capture_output=True)
    p3 = subprocess.run([cat], input=p2.stdout, capture_output=True)
    if p1.returncode or p2.returncode or p3.returncode:
        return f"pipeline failed: {(p1.stderr + p2.stderr + p3.stderr).decode(errors='replace')[:200]}"
    got = [json.loads(l)["ref_logps"][0] for l in p3.stdout.decode().splitlines()]
    want = [llama_ref.seq_logp(c, W, p, r) for p, r in seqs]
    diffs = [abs(a - b) for a, b in zip(got, want)]
    err = max(diffs, default=0.0)
    ok = all(d < 1e-4 for d in diffs)            # a NaN fails: max() would skip it
    return None if ok and len(got) == len(want) else f"max |diff| {err:g}: {got[:2]} vs {want[:2]}"


def test_smollm2():
    if os.environ.get("RL_REAL") == "0":
        skip("smollm2", "RL_REAL=0")
        return
    if gguf is None:
        skip("smollm2", GGUF_MISSING)
        return
    if not os.path.exists(GGUF_FILE):
        skip("smollm2", f"{GGUF_FILE} absent (pipelines/get-smollm2 downloads it)")
        return
    if not os.path.exists(os.path.join(BIN, "rl-import")):
        skip("smollm2", "rl-import not built")
        return
    import torch
    import llama_ref
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "smollm2")
        rc, err = import_gguf(GGUF_FILE, out)
        report("smollm2_imports", rc == 0, err)
        if rc:
            return
        check_all_tensors("smollm2", GGUF_FILE, out)
        with open(os.path.join(out, "config.json")) as f:
            c = json.load(f)
        report("smollm2_config", (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                                  c["num_key_value_heads"], c["vocab_size"], c["tie_word_embeddings"],
                                  c["rope_theta"]) == (576, 30, 9, 3, 49152, True, 100000.0), c)
        r, G = gguf_tensors(GGUF_FILE)
        with open(os.path.join(out, "tokenizer_config.json")) as f:
            tc = json.load(f)
        report("smollm2_tokenizer_config", tc.get("chat_template") == field(r, "tokenizer.chat_template") and
               (tc.get("bos_token"), tc.get("eos_token"), tc.get("pad_token")) ==
               ("<|im_start|>", "<|im_end|>", "<|im_end|>") and tc.get("add_bos_token") is False,
               {k: v for k, v in tc.items() if k != "added_tokens_decoder"})
        W = llama_ref.st_read(os.path.join(out, "model.safetensors"))
        ids = [1, 9690, 198, 2683, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
        with torch.no_grad():
            a = interleaved_forward(G, c, ids)
            head = W["model.embed_tokens.weight"]
            b = llama_ref.forward(c, W, ids) @ head.t()
        err = float((a - b).abs().max() / b.abs().max())
        report("smollm2_unpermuted_qk_match_interleaved_rope", err < 1e-4, f"rel err {err:g}")
        # the same check must fail if the permutation were not undone (the test can fail)
        Wbad = dict(W)
        for k in list(Wbad):
            if k.endswith("q_proj.weight"):
                Wbad[k] = torch.from_numpy(G[k.replace("model.layers.", "blk.").replace(".self_attn.q_proj", ".attn_q")][0])
        with torch.no_grad():
            bad = llama_ref.forward(c, Wbad, ids) @ head.t()
        report("smollm2_permuted_qk_would_differ", float((a - bad).abs().max() / b.abs().max()) > 1e-2)
        corpus = list(CORPUS)
        for doc in ["README.md", "docs/gguf.md", "docs/records.md", "tests/py/test_tok_hf.py", "lib/gguf.c"]:
            if os.path.exists(os.path.join(ROOT, doc)):
                with open(os.path.join(ROOT, doc), encoding="utf-8", errors="replace") as f:
                    corpus.append(f.read()[:20000])
        compare_tokenizer("smollm2", out, corpus)
        if all(os.path.exists(os.path.join(BIN, t)) for t in ("rl-cat", "rl-logp")):
            why = rl_logp_vs_ref(out, c, W, [(ids[:6], ids[6:9]), (ids[:12], ids[12:]), (ids[:3], ids[3:4])])
            report("smollm2_rl_logp_matches_ref", why is None, why)
        else:
            skip("smollm2_rl_logp_matches_ref", "rl-cat or rl-logp not built")


def greedy(n_new):
    """print greedy answers of the imported model (reference implementation)"""
    import torch
    import llama_ref
    model = os.path.join(MODELS, "smollm2-135m-instruct")
    with open(os.path.join(model, "config.json")) as f:
        c = json.load(f)
    W = llama_ref.st_read(os.path.join(model, "model.safetensors"))
    hf = tokenizers.Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    torch.set_num_threads(os.cpu_count() or 1)
    for q in ["What is the capital of France?", "Give me three tips for staying healthy.",
              "Write a haiku about the sea.", "What is 12 + 7?"]:
        text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
        ids = hf.encode(text).ids
        out = []
        with torch.no_grad():
            for _ in range(n_new):
                nxt = int((llama_ref.forward(c, W, ids + out)[-1] @ W["model.embed_tokens.weight"].t()).argmax())
                if nxt == c["eos_token_id"]:
                    break
                out.append(nxt)
        print(f"Q: {q}\nA: {hf.decode(out)}\n", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--greedy":
        greedy(int(sys.argv[2]) if len(sys.argv) > 2 else 40)
        sys.exit(0)
    test_cli()
    test_synthetic()
    test_smollm2()
    sys.exit(1 if failed else 0)

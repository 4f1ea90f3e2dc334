#!/usr/bin/env python3
"""safetensors interop between rlflow and Python.

- A file written by rlflow (`test_safetensors write`) is read by a tiny
  pure-Python/numpy reader, by torch, and by the `safetensors` package when it
  can be imported (also from build/venv); values and rounding (bf16 via torch,
  f16 via numpy) must match bit for bit.
- Files written by Python (hand-packed headers in odd orders, unpadded
  headers, all three dtypes; the `safetensors` package; a sharded directory)
  are read by rlflow (`test_safetensors dump`).
- rl-init's output: names and shapes match an independent listing of the
  Hugging Face layout, and its random weights are reproduced bit for bit by an
  independent Python implementation of the documented RNG (docs/checkpoints.md).
"""
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.environ.get("RL_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("RL_BUILD", os.path.join(ROOT, "build", "opt"))
BIN = os.environ.get("RL_BIN", os.path.join(ROOT, "bin"))
HELPER = os.path.join(BUILD, "t", "test_safetensors")
failed = 0


def report(name, ok, why=""):
    global failed
    print(("ok " if ok else "not ok ") + name + ("" if ok or not why else ": " + str(why)[:300]))
    if not ok:
        failed += 1


def skip(name, why):
    print("ok %s # SKIP %s" % (name, why))


try:
    import torch
except ImportError:
    torch = None

try:
    import safetensors.numpy as st_np
except ImportError:
    for site in glob.glob(os.path.join(ROOT, "build", "venv", "lib", "python3*", "site-packages")):
        sys.path.append(site)
    try:
        import safetensors.numpy as st_np
    except ImportError:
        st_np = None

# ---- a tiny independent reader ----

NP_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_st(path):
    """-> (header dict, {name: float32 array}, {name: raw array in its dtype})"""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    vals, raws = {}, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        a = np.frombuffer(data[b:end], dtype=NP_DTYPES[e["dtype"]]).reshape(e["shape"])
        raws[name] = a
        if e["dtype"] == "BF16":
            vals[name] = (a.astype(np.uint32) << 16).view(np.float32)
        else:
            vals[name] = a.astype(np.float32)
    return header, vals, raws


def pack_st(path, tensors, metadata=None, pad=True, order=None):
    """Hand-packed file: tensors = {name: (dtype, shape, bytes)}; offsets in `order`."""
    order = order or list(tensors)
    header, off, blob = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        dt, shape, b = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blob += b
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def dump(path):
    """rlflow's view of a file or directory: {name: (dtype, shape, float32 values)}"""
    p = subprocess.run([HELPER, "dump", path], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip())
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split(" ")
        shape = [int(x) for x in parts[2].strip("[]").split(",") if x]
        out[parts[0]] = (parts[1], shape, np.array([float(x) for x in parts[3:]], dtype=np.float32))
    return out


def bf16_bits(x):
    """float32 array -> bf16 bit patterns as uint16, rounded by torch (nearest even)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


# The values interop_write uses: k/7 for k = (37 i mod 101) - 50, then specials.
def interop_values():
    k = np.array([(i * 37) % 101 - 50 for i in range(32)], dtype=np.float32)
    v = k / np.float32(7)
    special = np.array([np.inf, -np.inf, -0.0, 65520.0, 1e-8, 3e38, 1e-40, 0.1], dtype=np.float32)
    return np.concatenate([v, special]).astype(np.float32)


def test_rlflow_to_python(tmp):
    path = os.path.join(tmp, "c.safetensors")
    p = subprocess.run([HELPER, "write", path], capture_output=True, text=True)
    report("rlflow writes interop file", p.returncode == 0, p.stderr)
    if p.returncode:
        return
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    report("header length multiple of 8", n % 8 == 0, n)
    header, vals, raws = read_st(path)
    report("metadata format pt", header.get("__metadata__") == {"format": "pt"}, header.get("__metadata__"))
    spans = sorted(e["data_offsets"] for k, e in header.items() if k != "__metadata__")
    report("offsets tile the data", spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
           and spans[-1][1] == len(raw) - 8 - n, spans)
    names = [k for k in header if k != "__metadata__"]
    width = {"F32": 4, "F16": 2, "BF16": 2}
    report("header order: widest dtype first, then name",
           names == sorted(names, key=lambda k: (-width[header[k]["dtype"]], k)), names)
    report("every tensor aligned to its dtype",
           all((8 + n + header[k]["data_offsets"][0]) % width[header[k]["dtype"]] == 0 for k in names))
    v = interop_values()
    report("f32 values exact", same_bits(vals["t.f32"], v.reshape(5, 8)))
    with np.errstate(over="ignore"):     # 65520 -> inf is intended
        f16 = v.astype(np.float16)
    report("f16 rounding = numpy", same_bits(raws["t.f16"], f16.reshape(2, 4, 5)))
    if torch is not None:
        report("bf16 rounding = torch", same_bits(raws["t.bf16"], bf16_bits(v).reshape(5, 8)))
    else:
        skip("bf16 rounding = torch", "torch not installed")
    report("scalar shape []", header["t.scalar"]["shape"] == [] and vals["t.scalar"].item() == v[0])
    report("empty tensor", header["t.empty"]["shape"] == [3, 0] and header["t.empty"]["data_offsets"][0] ==
           header["t.empty"]["data_offsets"][1])

    if torch is not None:
        t = torch.frombuffer(bytearray(raws["t.bf16"].tobytes()), dtype=torch.bfloat16).reshape(5, 8)
        report("torch reads bf16", torch.equal(t.float(), torch.from_numpy(vals["t.bf16"])))
    if st_np is not None:
        try:
            # numpy has no bfloat16: read the other tensors one by one
            from safetensors import safe_open
            with safe_open(path, framework="np") as g:
                d = {k: g.get_tensor(k) for k in g.keys() if k != "t.bf16"}
                meta = g.metadata()
            ok = same_bits(d["t.f32"], v.reshape(5, 8)) and same_bits(d["t.f16"], raws["t.f16"]) and \
                d["t.scalar"].shape == () and d["t.empty"].shape == (3, 0) and meta == {"format": "pt"}
            report("safetensors package reads rlflow file (numpy)", ok)
        except Exception as e:  # noqa: BLE001 - report any failure as a test failure
            report("safetensors package reads rlflow file (numpy)", False, e)
        if torch is not None:
            import safetensors.torch as st_t
            d = st_t.load_file(path)
            report("safetensors package reads rlflow file (torch bf16)",
                   d["t.bf16"].dtype == torch.bfloat16 and
                   same_bits(d["t.bf16"].view(torch.int16).numpy().view(np.uint16), raws["t.bf16"]))
    else:
        skip("safetensors package reads rlflow file", "python safetensors not importable")


def test_python_to_rlflow(tmp):
    rng = np.random.default_rng(5)
    a32 = rng.standard_normal((3, 5)).astype(np.float32)
    a16 = rng.standard_normal((7,)).astype(np.float16)
    abf = rng.standard_normal((2, 2, 3)).astype(np.float32)
    abf_bits = (abf.view(np.uint32) >> 16).astype(np.uint16)   # truncation: any pattern is valid bf16
    scalar = np.array(2.5, dtype=np.float32)
    tensors = {
        "w.f32": ("F32", a32.shape, a32.tobytes()),
        "w.f16": ("F16", a16.shape, a16.tobytes()),
        "w.bf16": ("BF16", abf.shape, abf_bits.tobytes()),
        "w.scalar": ("F32", [], scalar.tobytes()),
    }
    expect_bf = (abf_bits.astype(np.uint32) << 16).view(np.float32)
    for label, kw in [("unpadded header, odd order", dict(pad=False, order=["w.f16", "w.scalar", "w.bf16", "w.f32"])),
                      ("padded, with metadata", dict(metadata={"format": "np", "note": "x"}))]:
        path = os.path.join(tmp, "py.safetensors")
        pack_st(path, tensors, **kw)
        try:
            d = dump(path)
            ok = same_bits(d["w.f32"][2], a32.ravel()) and same_bits(d["w.f16"][2], a16.astype(np.float32)) and \
                same_bits(d["w.bf16"][2], expect_bf.ravel()) and d["w.bf16"][:2] == ("BF16", [2, 2, 3]) and \
                d["w.scalar"][1] == [] and d["w.scalar"][2][0] == 2.5
            report("rlflow reads python file: " + label, ok, d.keys())
        except RuntimeError as e:
            report("rlflow reads python file: " + label, False, e)

    # An unsupported dtype is refused by name.
    path = os.path.join(tmp, "i64.safetensors")
    pack_st(path, {"ids": ("I64", [2], np.array([1, 2], dtype=np.int64).tobytes())})
    p = subprocess.run([HELPER, "dump", path], capture_output=True, text=True)
    report("I64 refused by name", p.returncode != 0 and "I64" in p.stderr and "'ids'" in p.stderr, p.stderr)

    # A sharded checkpoint directory.
    sd = os.path.join(tmp, "sharded")
    os.mkdir(sd)
    pack_st(os.path.join(sd, "model-00001-of-00002.safetensors"), {"a": tensors["w.f32"]})
    pack_st(os.path.join(sd, "model-00002-of-00002.safetensors"), {"b": tensors["w.bf16"], "c": tensors["w.f16"]})
    json.dump({"metadata": {"total_size": 0}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                             "b": "model-00002-of-00002.safetensors",
                                                             "c": "model-00002-of-00002.safetensors"}},
              open(os.path.join(sd, "model.safetensors.index.json"), "w"))
    try:
        d = dump(sd)
        report("rlflow reads python shards", sorted(d) == ["a", "b", "c"] and same_bits(d["b"][2], expect_bf.ravel()))
    except RuntimeError as e:
        report("rlflow reads python shards", False, e)

    if st_np is not None:
        path = os.path.join(tmp, "pkg.safetensors")
        st_np.save_file({"x32": a32, "x16": a16, "s": scalar, "e": np.zeros((0, 4), np.float32)}, path)
        d = dump(path)
        report("rlflow reads safetensors package file (numpy)",
               same_bits(d["x32"][2], a32.ravel()) and same_bits(d["x16"][2], a16.astype(np.float32)) and
               d["s"][1] == [] and d["e"][1] == [0, 4])
        if torch is not None:
            import safetensors.torch as st_t
            tb = torch.from_numpy(abf).to(torch.bfloat16)
            st_t.save_file({"model.embed_tokens.weight": tb}, path, metadata={"format": "pt"})
            d = dump(path)
            report("rlflow reads safetensors package file (torch bf16)",
                   d["model.embed_tokens.weight"][0] == "BF16" and
                   same_bits(d["model.embed_tokens.weight"][2], tb.float().numpy().ravel()))
    else:
        skip("rlflow reads safetensors package file", "python safetensors not importable")


# ---- rl-init: layout and RNG, independently ----

M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def mix(x):
    return splitmix64(x)[1]


def rng_hash(seed, data, j):
    h = mix(seed ^ 0x9E3779B97F4A7C15)
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return mix(h ^ mix((j + len(data)) & M64))


class Xoshiro:
    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed, out = splitmix64(seed)
            self.s.append(out)

    def next(self):
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def normals(self, n):
        out = []
        while len(out) < n:
            u1 = ((self.next() >> 11) + 1) * 2.0 ** -53
            u2 = (self.next() >> 11) * 2.0 ** -53
            rad, th = math.sqrt(-2.0 * math.log(u1)), 6.283185307179586 * u2
            out += [rad * math.cos(th), rad * math.sin(th)]
        return np.array(out[:n], dtype=np.float32)


def hf_layout(cfg):
    """Independent listing of the HF tensor names and shapes for a config dict."""
    arch = cfg["architectures"][0]
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    qwen = arch.startswith("Qwen2")
    out = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out[p + "input_layernorm.weight"] = [h]
        out[p + "post_attention_layernorm.weight"] = [h]
        for n, o in (("q", nh * hd), ("k", kv * hd), ("v", kv * hd)):
            out[p + "self_attn.%s_proj.weight" % n] = [o, h]
            if qwen:
                out[p + "self_attn.%s_proj.bias" % n] = [o]
        out[p + "self_attn.o_proj.weight"] = [h, nh * hd]
        out[p + "mlp.gate_proj.weight"] = [f, h]
        out[p + "mlp.up_proj.weight"] = [f, h]
        out[p + "mlp.down_proj.weight"] = [h, f]
    if arch.endswith("ForSequenceClassification"):
        out["score.weight"] = [len(cfg.get("id2label", {"0": 0, "1": 1})), h]
    elif not cfg.get("tie_word_embeddings", False):
        out["lm_head.weight"] = [v, h]
    return out


def test_rl_init(tmp):
    rl_init = os.path.join(BIN, "rl-init")
    if not os.access(rl_init, os.X_OK):
        skip("rl-init layout", "bin/rl-init not built")
        return
    for cfgname in ("tiny-llama.json", "tiny-qwen2.json", "tiny-llama-rm.json", "tiny-llama3-tied.json"):
        cfgpath = os.path.join(ROOT, "tests", "data", "configs", cfgname)
        out = os.path.join(tmp, cfgname + ".model")
        p = subprocess.run([rl_init, "-c", cfgpath, "-o", out, "--seed", "1", "--dtype", "f32"],
                           capture_output=True, text=True)
        if p.returncode:
            report("rl-init " + cfgname, False, p.stderr)
            continue
        header, vals, _ = read_st(os.path.join(out, "model.safetensors"))
        got = {k: e["shape"] for k, e in header.items() if k != "__metadata__"}
        want = hf_layout(json.load(open(cfgpath)))
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        report("rl-init layout " + cfgname, got == want, diff)
        saved = json.load(open(os.path.join(out, "config.json")))
        report("rl-init config keeps layout " + cfgname, hf_layout(saved) == want)
        if cfgname == "tiny-llama.json":
            std = np.float32(0.02)
            ok = True
            for name, count in (("model.layers.0.self_attn.k_proj.weight", None), ("lm_head.weight", 300),
                                ("model.embed_tokens.weight", 300)):
                x = vals[name].ravel()
                n = x.size if count is None else count
                r = Xoshiro(rng_hash(1, name.encode(), 0))
                exp = (std * r.normals(n)).astype(np.float32)
                ok = ok and same_bits(x[:n], exp)
            report("rl-init weights reproduced by python RNG", ok)
            norms = [k for k in vals if k.endswith("norm.weight")]
            report("rl-init norms ones", all((vals[k] == 1).all() for k in norms) and len(norms) == 5)
            e = vals["model.embed_tokens.weight"]
            report("rl-init std", abs(float(e.std()) - 0.02) < 0.0005 and abs(float(e.mean())) < 0.0005, e.std())
        if cfgname == "tiny-qwen2.json":
            b = [k for k in vals if k.endswith(".bias")]
            report("rl-init qwen2 biases zero", len(b) == 6 and all((vals[k] == 0).all() for k in b))


def import_transformers():
    for site in glob.glob(os.path.join(ROOT, "build", "venv", "lib", "python3*", "site-packages")):
        if site not in sys.path:
            sys.path.append(site)
    try:
        import transformers
        transformers.logging.set_verbosity_error()
        return transformers
    except Exception:  # noqa: BLE001 - absent or broken: skip
        return None


def test_transformers(tmp):
    """What rl-init writes loads in transformers unchanged, and what transformers
    writes loads in rlflow (weights through the dump helper, config through rl-init)."""
    tf = import_transformers() if torch is not None else None
    rl_init = os.path.join(BIN, "rl-init")
    if tf is None or not os.access(rl_init, os.X_OK):
        skip("transformers loads rl-init output", "transformers (or torch, rl-init) not available")
        return
    for cfgname, dtype in (("tiny-llama.json", "f32"), ("tiny-qwen2.json", "bf16"), ("tiny-llama-rm.json", "f32"),
                           ("tiny-llama3-tied.json", "f16")):
        cfgpath = os.path.join(ROOT, "tests", "data", "configs", cfgname)
        out = os.path.join(tmp, "tf-" + cfgname)
        p = subprocess.run([rl_init, "-c", cfgpath, "-o", out, "--seed", "3", "--dtype", dtype],
                           capture_output=True, text=True)
        if p.returncode:
            report("transformers loads " + cfgname, False, p.stderr)
            continue
        cls = tf.AutoModelForSequenceClassification if "-rm" in cfgname else tf.AutoModelForCausalLM
        tdt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
        try:
            model, info = cls.from_pretrained(out, output_loading_info=True, torch_dtype=tdt)
        except Exception as e:  # noqa: BLE001
            report("transformers loads " + cfgname, False, repr(e))
            continue
        clean = not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
        report("transformers loads " + cfgname, clean, info)
        ours = dump(out)
        sd = model.state_dict()
        same = all(same_bits(sd[k].float().numpy().ravel(), v[2]) for k, v in ours.items())
        report("transformers sees the same weights " + cfgname, same and set(ours) <= set(sd))
        cfg = json.load(open(cfgpath))
        mc = model.config
        report("transformers config " + cfgname,
               mc.num_key_value_heads == cfg.get("num_key_value_heads", cfg["num_attention_heads"]) and
               mc.tie_word_embeddings == cfg.get("tie_word_embeddings", False) and
               (mc.rope_scaling or {}).get("rope_type") == (cfg.get("rope_scaling") or {}).get("rope_type"),
               mc)

    # The other way: transformers builds and saves each architecture; rlflow loads it.
    for arch, extra in (("LlamaForCausalLM", {"tie_word_embeddings": False}), ("MistralForCausalLM", {}),
                        ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
                        ("LlamaForSequenceClassification", {"num_labels": 1, "pad_token_id": 0})):
        mt = {"Llama": "llama", "Mistral": "mistral", "Qwen2": "qwen2"}[arch.split("For")[0]]
        conf = tf.AutoConfig.for_model(mt, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                       max_position_embeddings=128, **extra)
        conf.architectures = [arch]
        model = getattr(tf, arch)(conf)
        out = os.path.join(tmp, "hf-" + arch)
        model.save_pretrained(out, safe_serialization=True)
        try:
            d = dump(out)
            sd = model.state_dict()
            want = hf_layout(json.load(open(os.path.join(out, "config.json"))))
            ok = {k: v[1] for k, v in d.items()} == want and \
                all(same_bits(sd[k].numpy().ravel(), v[2]) for k, v in d.items())
            report("rlflow reads transformers checkpoint " + arch, ok, sorted(d))
        except RuntimeError as e:
            report("rlflow reads transformers checkpoint " + arch, False, e)
        cfgp = os.path.join(out, "config.json")
        p = subprocess.run([rl_init, "-c", cfgp, "-o", out + ".re", "-q"], capture_output=True, text=True)
        report("rlflow parses transformers config " + arch, p.returncode == 0, p.stderr)


def main():
    if not os.access(HELPER, os.X_OK):
        report("helper built", False, HELPER + " missing (make %s)" % HELPER)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        test_rlflow_to_python(tmp)
        test_python_to_rlflow(tmp)
        test_rl_init(tmp)
        test_transformers(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

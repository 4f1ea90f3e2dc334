"""Record streams interoperate with Python's msgpack + zstandard, both ways."""
import io
import json
import math
import os
import struct
import subprocess
import sys

ROOT = os.environ.get("RL_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ.get("RL_BIN", os.path.join(ROOT, "bin"))
failed = 0


def report(ok, name, why=""):
    global failed
    print(("ok " if ok else "not ok ") + name + ("" if ok else ": " + why))
    failed += not ok


try:
    import msgpack
    import zstandard
except ImportError as e:
    print("ok python interop # SKIP %s (install python3-msgpack python3-zstandard)" % e)
    sys.exit(0)


def rl_cat(args, data=b""):
    p = subprocess.run([os.path.join(BIN, "rl-cat")] + args, input=data, capture_output=True)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def from_json_conv(v):
    """The JSON conventions of man/rl-records.5, decoded into Python values."""
    if isinstance(v, dict):
        if len(v) == 1 and "$base64" in v:
            import base64
            return base64.b64decode(v["$base64"])
        if len(v) == 1 and "$float" in v:
            return float(v["$float"])
        if len(v) == 1 and "$ext" in v:
            import base64
            return msgpack.ExtType(v["$ext"][0], base64.b64decode(v["$ext"][1]))
        return {k: from_json_conv(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json_conv(x) for x in v]
    return v


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) == type(b) and a == b


corpus_path = os.path.join(ROOT, "tests", "data", "tricky.jsonl")
corpus = [from_json_conv(json.loads(line)) for line in open(corpus_path, encoding="utf-8")]

# 1. rl-cat writes, Python reads (streaming, record by record).
rc, out, err = rl_cat(["-p", corpus_path])
report(rc == 0, "rl-cat -p succeeds", err)
with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out), read_across_frames=True) as r:
    records = list(msgpack.Unpacker(r, raw=False, strict_map_key=False))
report(len(records) == len(corpus), "python reads every record of rl-cat's stream", "%d vs %d" % (len(records), len(corpus)))
bad = [c["id"] for c, r in zip(corpus, records) if not same(c, r)]
report(not bad, "python sees the same values rl-cat was given", "differ: %s" % bad)
ints = next(r for r in records if r["id"] == "ints")["v"]
report(ints[-1] == 2**64 - 1 and ints[-2] == -2**63, "uint64 max and int64 min survive", repr(ints[-2:]))

# 2. Python writes (several frames, float32, bin, uint64, ext), rl-cat reads.
recs = [
    {"id": "p1", "rewards": [0.1, -2.5, 1e-8], "ids": list(range(300)), "bin": b"\x00\xff\x10"},
    {"id": "p2", "big": 2**64 - 1, "neg": -2**63, "nested": {"a": [None, True, False, {}, []]}},
    {"id": "p3", "ext": msgpack.ExtType(7, b"xyz"), "text": "żółw 🐢 \u0000 \n"},
]
single = [{"id": "f32", "x": 0.1, "y": 3.4028234663852886e38, "z": 1e-45, "w": 16777217.0}]
frames = b""
for rec in recs:
    frames += zstandard.ZstdCompressor(level=3).compress(msgpack.packb(rec, use_bin_type=True))
frames += zstandard.ZstdCompressor().compress(b"".join(msgpack.packb(r, use_single_float=True) for r in single))
rc, out, err = rl_cat([], frames)
report(rc == 0, "rl-cat reads a Python stream of several zstd frames", err)
lines = [from_json_conv(json.loads(l)) for l in out.decode().splitlines()]
report(len(lines) == 4, "four records from four frames", str(len(lines)))
report(all(same(a, b) for a, b in zip(recs, lines[:3])), "values written by Python read back exactly", repr(lines[:3])[:300])
f32 = json.loads(out.decode().splitlines()[3])
as_f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]
exp = {k: as_f32(v) for k, v in single[0].items() if k != "id"}
report(all(as_f32(f32[k]) == exp[k] for k in exp), "float32 values round-trip through their JSON text", repr(f32))
report(f32["x"] == 0.1 and f32["z"] == 1e-45, "float32 printed as the shortest decimal (0.1, 1e-45)", repr(f32))
report('"w":16777216.0' in out.decode(), "float32 that is an integer still prints as a float", out.decode().splitlines()[3])

# 3. raw msgpack (no zstd) from Python is read too; and rl-cat -L 0 is raw msgpack for Python.
raw = b"".join(msgpack.packb(r, use_bin_type=True) for r in recs)
rc, out, err = rl_cat(["-p", "-L", "0"], raw)
report(rc == 0 and out == raw, "raw msgpack in, raw msgpack out, byte for byte", err)

# 4. a stream written record by record with flushes decodes incrementally in Python
rc, out, err = rl_cat(["-p"], b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(1000)))
d = zstandard.ZstdDecompressor().decompressobj()
got = list(msgpack.Unpacker(io.BytesIO(d.decompress(out)), raw=False))
report([g["i"] for g in got] == list(range(1000)), "1000 records in order", str(len(got)))

sys.exit(1 if failed else 0)

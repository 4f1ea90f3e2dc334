"""rl-tok against Hugging Face `tokenizers` on a generated corpus: random
Unicode, code, numbers, whitespace runs, specials mid-word; specials on and
off. Skipped (saying so) when the package or the fixtures are absent.
The package is looked for in build/venv (scripts/pydeps installs it there)."""
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.environ.get("RL_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIX = os.environ.get("RL_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))

try:
    import tokenizers
except ImportError:
    venv_py = os.path.join(ROOT, "build", "venv", "bin", "python")
    if os.path.exists(venv_py) and os.environ.get("RL_TOK_HF_REEXEC") != "1":
        os.environ["RL_TOK_HF_REEXEC"] = "1"
        os.execv(venv_py, [venv_py] + sys.argv)
    print("ok tok_hf # SKIP python package tokenizers not installed (scripts/pydeps installs it)")
    sys.exit(0)

SPECIALS = {
    "gpt2": ["<|endoftext|>"],
    "llama3": ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>"],
    "qwen3": ["<|im_start|>", "<|im_end|>", "<think>", "<|endoftext|>"],
}

WORDS = ("the quick brown fox jumps over lazy dog I'm you'll they've DON'T we'RE "
         "naïve café Zürich straße Привет мир Γειά σου 日本語 中文字符 한국어 مرحبا नमस्ते "
         "😀 👍🏽 🇫🇷 ∑∫√ ©®™ ﬁ e\u0301 A\u030a").split()
CODE = ["def f(x):\n    return x**2 + 1  # c\n", "for (int i = 0; i < n; i++) { a[i] += b[i]; }\n",
        "if x != None and y >= 3:\n\tpass\n", "#include <stdio.h>\nint main(void){return 0;}\n",
        "SELECT * FROM t WHERE id = 42;", "  x = [1, 2, 3]\r\n", "let s = \"str\\n\";"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028", " \t\t ", "\u200b",
          "\x0b", "\x0c", "\x1c\x1d\x1e\x1f", "\x85", "\u180e", "\ufeff", "\u2029", "\u202f", "\u205f", "\u1680",
          "\x00", "\x7f", " \u00a0 ", "\r", "\r\r\n"]
NUMS = ["\u00b2\u00bd", "\u216b", "\u0663\u0664", "\uff11\uff12\uff13", "\u2460", "\U0001d7d8", "12\u00b3"]
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
          (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F64F), (0x300, 0x36F),
          (0x2000, 0x206F), (0xFF00, 0xFFEF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF), (0xE000, 0xE0FF)]


def rand_text(rng, name):
    parts = []
    for _ in range(rng.randint(1, 12)):
        k = rng.random()
        if k < 0.3:
            parts.append(rng.choice(WORDS))
        elif k < 0.4:
            parts.append(rng.choice(CODE))
        elif k < 0.45:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))) + rng.choice(["", ".", ",", "5", "x"]))
        elif k < 0.5:
            parts.append(rng.choice(NUMS))
        elif k < 0.65:
            parts.append(rng.choice(SPACES))
        elif k < 0.75:
            w = rng.choice(WORDS)
            i = rng.randint(0, len(w))
            parts.append(w[:i] + rng.choice(SPECIALS[name]) + w[i:])   # special mid-word
        else:
            lo, hi = rng.choice(RANGES)
            parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        if rng.random() < 0.5:
            parts.append(rng.choice([" ", "", "\n", "'s ", "'LL "]))
    return "".join(parts)


def hf_tokenizer(name):
    d = os.path.join(FIX, "tokenizers", name)
    if name == "gpt2":
        from tokenizers import Tokenizer, models, pre_tokenizers, decoders
        bpe = models.BPE.from_file(os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe"))
        t = Tokenizer(bpe)
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        t.add_special_tokens(["<|endoftext|>"])
        return t, d
    from tokenizers import Tokenizer
    return Tokenizer.from_file(os.path.join(d, "tokenizer.json")), d


def rl_tok(path, files, extra):
    out = subprocess.run(["rl-tok", "-t", path] + extra + files, capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode(errors="replace"))
    return [[int(x) for x in line.split()] for line in out.stdout.decode().split("\n")[:-1]]


def jinja_env():
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None

    def raise_exception(msg):
        raise RuntimeError(msg)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)   # as transformers renders
    env.globals["raise_exception"] = raise_exception
    return env


def rand_conversation(rng, name):
    """Benign content (no special tokens in it), edges with whitespace, Qwen3 think blocks."""
    def content():
        t = rand_text(rng, "gpt2").replace("<|endoftext|>", "eot")
        if rng.random() < 0.3:
            t = rng.choice(SPACES) + t + rng.choice(SPACES)
        return t
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": content()})
    for turn in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": content()})
        if turn < 3 or rng.random() < 0.5:
            a = content()
            if name == "qwen3" and rng.random() < 0.4:
                a = "<think>\n" + content() + "\n</think>\n\n" + a
            msgs.append({"role": "assistant", "content": a})
    if name == "qwen3" and rng.random() < 0.3:
        msgs.append({"role": "tool", "content": content()})
    if msgs[-1]["role"] == "assistant" and rng.random() < 0.5:
        msgs.append({"role": "user", "content": content()})
    return msgs


def chat_compare(name, n):
    """rl-tok --chat ids == HF encode of the real Jinja template's text."""
    import json
    env = jinja_env()
    if env is None:
        print("ok chat_hf_%s # SKIP jinja2 not installed" % name)
        return 0
    d = os.path.join(FIX, "tokenizers", name)
    cfg = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
    tpl = env.from_string(cfg["chat_template"])
    hf, path = hf_tokenizer(name)
    hf.encode_special_tokens = False
    rng = random.Random(99 + len(name))
    convs = [rand_conversation(rng, name) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, c in enumerate(convs):
            p = os.path.join(tmp, "%04d.json" % i)
            with open(p, "w", encoding="utf-8") as f:
                json.dump(c, f)
            files.append(p)
        got = rl_tok(path, files, ["--chat"])
    bad = []
    for i, c in enumerate(convs):
        text = tpl.render(messages=c, add_generation_prompt=True, bos_token=cfg.get("bos_token"))
        want = hf.encode(text, add_special_tokens=False).ids
        if got[i] != want:
            bad.append((i, text))
    case = "chat_hf_%s" % name
    if bad:
        i, text = bad[0]
        print("not ok %s: %d of %d conversations differ; first renders %r" % (case, len(bad), n, text[:300]))
        return 1
    print("ok %s (%d conversations vs the Jinja template)" % (case, n))
    return 0


BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
VARIANTS = {   # pipelines no fixture uses, on GPT-2's vocabulary: every pre-tokenizer kind and behavior
    "punct_digits": (None, {"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": True},
        dict(BL, use_regex=True)]}),
    "wsplit_prefix": ({"type": "NFKC"}, {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, dict(BL, add_prefix_space=True)]}),
    "merged_next": ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]},
                    {"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithNext", "invert": False},
                        {"type": "Digits", "individual_digits": False}, BL]}),
    "merged_prev_invert": ({"type": "NFKD"}, {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "[aeiou\\s]"}, "behavior": "MergedWithPrevious", "invert": True},
        {"type": "Punctuation", "behavior": "Contiguous"}, BL]}),
    "removed_string_empty": (None, {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": "x*|\\p{N}"}, "behavior": "Isolated", "invert": False}, BL]}),
}


def variants_compare(n):
    import json
    from tokenizers import Tokenizer
    base = json.loads(hf_tokenizer("gpt2")[0].to_str())
    failed = 0
    rng = random.Random(7)
    texts = [rand_text(rng, "gpt2") for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, t in enumerate(texts):
            p = os.path.join(tmp, "%05d.txt" % i)
            with open(p, "w", encoding="utf-8", newline="") as f:
                f.write(t)
            files.append(p)
        for name, (norm, pre) in VARIANTS.items():
            j = dict(base, normalizer=norm, pre_tokenizer=pre)
            path = os.path.join(tmp, name + ".json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f)
            hf = Tokenizer.from_file(path)
            want = [hf.encode(t, add_special_tokens=False).ids for t in texts]
            got = rl_tok(path, files, ["--raw"])
            bad = [i for i in range(n) if got[i] != want[i]]
            if bad:
                failed += 1
                i = bad[0]
                print("not ok tok_hf_variant_%s: %d of %d differ; first %r: got %s want %s"
                      % (name, len(bad), n, texts[i][:80], got[i][:30], want[i][:30]))
            else:
                print("ok tok_hf_variant_%s (%d texts)" % (name, n))
    return failed


def main():
    if not os.path.exists(os.path.join(FIX, "tokenizers", "golden.json")):
        print("ok tok_hf # SKIP fixtures absent (set RL_FIXTURES)")
        return 0
    small = os.environ.get("RL_SANITIZE") == "1"   # the sanitized rl-tok is slower: fewer texts
    n = int(os.environ.get("RL_TOK_HF_N", "100" if small else "400"))
    failed = 0
    for name in ["gpt2", "llama3", "qwen3"]:
        rng = random.Random(1234 + len(name))
        texts = [rand_text(rng, name) for _ in range(n)]
        texts += ["", " ", "a" * 5000, " " * 3000 + "x", "1" * 1000, "\n" * 200, "日本" * 800]
        hf, path = hf_tokenizer(name)
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i, t in enumerate(texts):
                p = os.path.join(tmp, "%05d.txt" % i)
                with open(p, "w", encoding="utf-8", newline="") as f:
                    f.write(t)
                files.append(p)
            for special in (True, False):
                try:
                    hf.encode_special_tokens = not special
                except AttributeError:
                    if not special:
                        print("ok tok_hf_%s_nospecial # SKIP tokenizers too old for encode_special_tokens" % name)
                        continue
                want = [hf.encode(t, add_special_tokens=False).ids for t in texts]
                got = rl_tok(path, files, ["--raw"] + ([] if special else ["-S"]))
                bad = [i for i in range(len(texts)) if got[i] != want[i]]
                case = "tok_hf_%s_%s" % (name, "special" if special else "nospecial")
                if bad:
                    i = bad[0]
                    print("not ok %s: %d of %d texts differ; first %r: got %s want %s"
                          % (case, len(bad), len(texts), texts[i][:80], got[i][:30], want[i][:30]))
                    failed += 1
                else:
                    print("ok %s (%d texts, tokenizers %s)" % (case, len(texts), tokenizers.__version__))
    failed += variants_compare(n)
    for name in ["llama3", "qwen3"]:
        failed += chat_compare(name, int(os.environ.get("RL_TOK_HF_CHATS", "50" if small else "150")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Writes the demo's embedded task (run once by a developer; its output is
committed, so `make demo` needs no Python):

  tokenizer.json, tokenizer_config.json   a byte-level BPE whose merges make every
                                          task word one token; ChatML template
  config.json                             the tiny policy (Llama, 2 layers)
  gold-lexicon.tsv                        the gold rater's word weights
  sft.jsonl                               SFT examples: neutral descriptions
  prompts-*.jsonl                         prompts for the RM data, the online
                                          iterations, the offline baseline, evaluation

The task: asked about a topic, the model describes it with adjectives. The SFT
data draws adjectives uniformly from kind, neutral and unkind ones; the "human"
(the gold rater) prefers kind descriptions and dislikes rambling.
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
TOPICS = ["cat", "dog", "sea", "city", "garden", "music", "coffee", "river", "forest", "train", "book", "moon",
          "house", "street", "song", "winter"]
POSITIVE = ["kind", "happy", "bright", "gentle", "lovely", "warm", "calm", "wonderful", "friendly", "beautiful"]
NEUTRAL = ["big", "small", "old", "new", "quiet", "round", "long", "green", "tall", "busy"]
NEGATIVE = ["cold", "dark", "angry", "noisy", "dirty", "broken", "boring", "ugly", "cruel", "sad"]
FUNCTION = ["The", "the", "is", "and", "very", "also", "It", "it", "Tell", "me", "about", "Describe", "What", "like",
            "user", "assistant", "system"]
ASKS = ["Tell me about the {}.", "Describe the {}.", "What is the {} like?"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(range(256))}
    merges = []
    words = TOPICS + POSITIVE + NEUTRAL + NEGATIVE + FUNCTION

    def add(a, b):
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append(a + " " + b)

    for w in words:                               # each word, left to right
        for i in range(1, len(w)):
            add(w[:i], w[i])
    for w in words:                               # then a leading space onto the whole word
        add("Ġ", w)
    added = []
    for s in SPECIALS:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": vocab, "merges": merges}}
    return tok, len(vocab) + len(added)


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def response(r):
    adjs = POSITIVE + NEUTRAL + NEGATIVE
    topic_sentence = "The {} is {}".format("{}", r.choice(adjs))
    if r.random() < 0.6:
        topic_sentence += " and " + r.choice(adjs)
    text = topic_sentence + "."
    if r.random() < 0.5:
        text += " It is " + ("very " if r.random() < 0.3 else "") + r.choice(adjs) + "."
    return text


def prompt_record(r, i, tag):
    topic = r.choice(TOPICS)
    return {"id": "%s-%d" % (tag, i), "messages": [{"role": "user", "content": r.choice(ASKS).format(topic)}],
            "topic": topic}


def main():
    r = random.Random(2024)
    tok, n_vocab = tokenizer()
    json.dump(tok, open(os.path.join(HERE, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({"chat_template": CHATML, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(HERE, "tokenizer_config.json"), "w"), indent=1)
    im_end = n_vocab - 1
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": n_vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": im_end, "pad_token_id": n_vocab - 3,
           "torch_dtype": "float32", "initializer_range": 0.02}
    json.dump(cfg, open(os.path.join(HERE, "config.json"), "w"), indent=1)
    with open(os.path.join(HERE, "gold-lexicon.tsv"), "w") as f:
        f.write("# the demo's gold rater: kind words +1, unkind words -1 (neutral words 0)\n")
        for w in POSITIVE:
            f.write("%s\t1\n" % w)
        for w in NEGATIVE:
            f.write("%s\t-1\n" % w)
    with open(os.path.join(HERE, "sft.jsonl"), "w") as f:
        for i in range(2400):
            p = prompt_record(r, i, "sft")
            p["response"] = response(r).format(p["topic"])
            f.write(json.dumps(p) + "\n")
    for tag, n in (("rm", 2000), ("online", 384), ("heldout", 96)):
        with open(os.path.join(HERE, "prompts-%s.jsonl" % tag), "w") as f:
            for i in range(n):
                f.write(json.dumps(prompt_record(r, i, tag)) + "\n")


if __name__ == "__main__":
    main()

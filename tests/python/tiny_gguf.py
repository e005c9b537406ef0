"""Tiny random-weight GGUF models (a few MB each) for testing architectures other than the
SmolLM2 test model's `llama`: qwen2, qwen3, gemma3, phi3, and llama with a tekken tokenizer.

The weights are random (normal * 0.02, norms 1.0, a fixed seed), so the models babble, but
llama.cpp loads them and runs them: the hyperparameters, the tensor names and the tensor shapes
follow what the vendored llama.cpp (llama-cpp-sys-2 0.1.161, `llama.cpp/src/models/<arch>.cpp`
`load_arch_tensors` and `llama-model.cpp` `load_hparams`) requires. The tokenizer is the SmolLM2
test model's, copied whole (every `tokenizer.*` key: vocab of 49152, merges, token types,
special token ids, chat template), so llama.cpp tokenizes and the chat template renders.

    python3 tests/python/tiny_gguf.py ARCH OUT.gguf [--source SMOLLM2.gguf] [--f32]

ARCH is one of qwen2, qwen3, gemma3, phi3, tekken (a `llama` model whose tokenizer.ggml.pre is
"tekken"), or llama. The source defaults to $HYPERLLAMA_TEST_MODEL, else
~/.cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf. The CLI prints build()'s facts as JSON.

From Python: `build(arch, out_path, source_gguf)` writes the file and returns the facts a test
asserts on (architecture, parameter_count, context_length, quantization, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import zlib

import numpy as np
import gguf
from gguf import GGUFValueType as VT

VOCAB = 49152

# Shapes below are ggml `ne` order, as in llama.cpp's create_tensor calls: {n_embd, n_vocab} is a
# row-major numpy array of shape (n_vocab, n_embd).
COMMON = dict(n_ctx=512, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128)

ARCHS = {
    # models/qwen2.cpp: q {n_embd, n_embd}, k/v {n_embd, n_embd_gqa}, q/k/v biases (optional
    # there, written as real Qwen2 GGUFs have them); head size must equal n_rot.
    "qwen2": dict(arch="qwen2", eps=1e-6, rope_base=1000000.0, qkv_bias=True),
    # models/qwen3.cpp: q {n_embd, n_embd_head_k*n_head} (the head size is free of n_embd/n_head,
    # as in Qwen3 0.6B: 16 heads of 128 on 1024), per-head-size q/k norms.
    "qwen3": dict(arch="qwen3", eps=1e-6, rope_base=1000000.0, head_dim=32, qk_norm=True),
    # models/gemma3.cpp: as qwen3 plus post-attention and post-FFN norms; sliding-window attention
    # on every other layer (pattern 2: layer 0 SWA, layer 1 full).
    "gemma3": dict(arch="gemma3", eps=1e-6, rope_base=1000000.0, head_dim=32, qk_norm=True,
                   post_norms=True, sliding_window=128, sliding_window_pattern=2),
    # models/phi3.cpp: fused attn_qkv {n_embd, n_embd + 2*n_embd_gqa}, fused ffn_up {n_embd, 2*n_ff}
    # (gate and up halves), no ffn_gate; no rope factors (no long-rope scaling).
    "phi3": dict(arch="phi3", eps=1e-5, rope_base=10000.0, fused=True, rope_dim=True),
    # models/llama.cpp: n_rot must equal the head size (llama-model.cpp load_hparams).
    "llama": dict(arch="llama", eps=1e-5, rope_base=100000.0, rope_dim=True),
    "tekken": dict(arch="llama", eps=1e-5, rope_base=1000000.0, rope_dim=True, pre="tekken", add_bos=True),
}
ALIASES = {"llama-tekken": "tekken", "mistral": "tekken"}

FILE_TYPES = {"F32": 0, "F16": 1}


def default_source() -> str:
    p = os.environ.get("HYPERLLAMA_TEST_MODEL")
    if p:
        return p
    return str(pathlib.Path.home() / ".cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def config(arch: str, **overrides) -> dict:
    """The hyperparameters build() uses for `arch` (COMMON + the arch's entry + overrides)."""
    key = ALIASES.get(arch, arch)
    if key not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: use one of {', '.join(ARCHS)}")
    c = dict(COMMON, **ARCHS[key], variant=key)
    c.update(overrides)
    assert c["n_head"] % c["n_head_kv"] == 0
    c.setdefault("head_dim", c["n_embd"] // c["n_head"])
    if c.get("fused") or key == "qwen2":
        # phi3 and qwen2 size q and the attention output as {n_embd, n_embd}.
        assert c["head_dim"] * c["n_head"] == c["n_embd"], f"{key} needs head_dim * n_head == n_embd"
    return c


def tensor_specs(c: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, ggml ne, kind) for every tensor llama.cpp's load_arch_tensors creates for the config;
    kind is "weight" (matrices, F16 or F32 per the file type), "norm" (F32, 1.0) or "bias" (F32)."""
    E, F, D = c["n_embd"], c["n_ff"], c["head_dim"]
    q, kv = c["n_head"] * D, c["n_head_kv"] * D
    t = [("token_embd.weight", (E, VOCAB), "weight"), ("output_norm.weight", (E,), "norm")]
    # no output.weight: every one of these archs falls back to token_embd (TENSOR_DUPLICATED).
    for i in range(c["n_layer"]):
        b = f"blk.{i}."
        t.append((b + "attn_norm.weight", (E,), "norm"))
        if c.get("fused"):
            t.append((b + "attn_qkv.weight", (E, q + 2 * kv), "weight"))
        else:
            t += [(b + "attn_q.weight", (E, q), "weight"),
                  (b + "attn_k.weight", (E, kv), "weight"),
                  (b + "attn_v.weight", (E, kv), "weight")]
        if c.get("qkv_bias"):
            t += [(b + "attn_q.bias", (q,), "bias"), (b + "attn_k.bias", (kv,), "bias"), (b + "attn_v.bias", (kv,), "bias")]
        if c.get("qk_norm"):
            t += [(b + "attn_q_norm.weight", (D,), "norm"), (b + "attn_k_norm.weight", (D,), "norm")]
        t.append((b + "attn_output.weight", (q, E), "weight"))
        if c.get("post_norms"):
            t.append((b + "post_attention_norm.weight", (E,), "norm"))
        t.append((b + "ffn_norm.weight", (E,), "norm"))
        if c.get("fused"):
            t.append((b + "ffn_up.weight", (E, 2 * F), "weight"))
        else:
            t += [(b + "ffn_gate.weight", (E, F), "weight"), (b + "ffn_up.weight", (E, F), "weight")]
        t.append((b + "ffn_down.weight", (F, E), "weight"))
        if c.get("post_norms"):
            t.append((b + "post_ffw_norm.weight", (E,), "norm"))
    return t


def _read_tokenizer(source: str) -> list[tuple[str, object, VT, VT | None]]:
    """Every tokenizer.* key of the source GGUF as (key, value, type, array element type), with
    the exact GGUF types (string arrays as raw bytes, INT32 token types, FLOAT32 scores)."""
    r = gguf.GGUFReader(source)
    out = []
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = VT(f.types[0])
        if vtype == VT.ARRAY:
            sub = VT(f.types[-1])
            if len(f.types) != 2:
                raise ValueError(f"{key}: nested arrays are not supported")
            if sub == VT.STRING:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i][0].item() for i in f.data]
            out.append((key, val, vtype, sub))
        elif vtype == VT.STRING:
            out.append((key, bytes(f.parts[f.data[0]]), vtype, None))
        else:
            out.append((key, f.parts[f.data[0]][0].item(), vtype, None))
    names = {k for k, *_ in out}
    for need in ("tokenizer.ggml.model", "tokenizer.ggml.tokens"):
        if need not in names:
            raise ValueError(f"{source}: no {need}")
    return out


def build(arch: str, out_path: str, source_gguf: str | None = None, *, dtype: str = "F16",
          seed: int | None = None, chat_template: bool = True, **overrides) -> dict:
    """Writes a tiny `arch` model to out_path with source_gguf's tokenizer; returns its facts.

    dtype: "F16" (general.file_type 1) or "F32" (0), for the matrices; norms and biases are F32
    either way, as llama.cpp's converters write them. overrides replace config() entries
    (n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, head_dim, sliding_window, add_bos, ...)."""
    c = config(arch, **overrides)
    if dtype not in FILE_TYPES:
        raise ValueError(f"dtype {dtype!r}: use F16 or F32")
    source_gguf = source_gguf or default_source()
    tok = _read_tokenizer(source_gguf)
    n_vocab = len(next(v for k, v, *_ in tok if k == "tokenizer.ggml.tokens"))
    if n_vocab != VOCAB:
        raise ValueError(f"{source_gguf}: vocab of {n_vocab}, expected {VOCAB}")

    a, variant = c["arch"], c["variant"]
    name = f"tiny-{'llama-tekken' if variant == 'tekken' else variant}"
    if variant == "phi3":
        # llama.cpp sets Phi-3's token attributes when the *name* says phi3 (llama-vocab.cpp),
        # looking up "</s>", "<s>" and "<unk>", which SmolLM2's vocabulary lacks.
        name = "tiny-phi"
    w = gguf.GGUFWriter(out_path, a)  # writes general.architecture
    w.add_key_value("general.type", "model", VT.STRING)
    w.add_key_value("general.name", name, VT.STRING)
    w.add_key_value("general.file_type", FILE_TYPES[dtype], VT.UINT32)
    w.add_key_value("general.quantization_version", gguf.GGML_QUANT_VERSION, VT.UINT32)

    u32 = lambda k, v: w.add_key_value(f"{a}.{k}", int(v), VT.UINT32)  # noqa: E731
    f32 = lambda k, v: w.add_key_value(f"{a}.{k}", float(v), VT.FLOAT32)  # noqa: E731
    u32("vocab_size", VOCAB)
    u32("context_length", c["n_ctx"])
    u32("embedding_length", c["n_embd"])
    u32("block_count", c["n_layer"])
    u32("feed_forward_length", c["n_ff"])
    u32("attention.head_count", c["n_head"])
    u32("attention.head_count_kv", c["n_head_kv"])
    f32("attention.layer_norm_rms_epsilon", c["eps"])
    f32("rope.freq_base", c["rope_base"])
    if c["head_dim"] * c["n_head"] != c["n_embd"] or c.get("qk_norm"):
        u32("attention.key_length", c["head_dim"])
        u32("attention.value_length", c["head_dim"])
    if c.get("rope_dim"):
        u32("rope.dimension_count", c["head_dim"])
    if c.get("sliding_window"):
        u32("attention.sliding_window", c["sliding_window"])
        if c.get("sliding_window_pattern"):
            u32("attention.sliding_window_pattern", c["sliding_window_pattern"])

    tok_facts = {}
    for key, val, vtype, sub in tok:
        if key == "tokenizer.chat_template" and not chat_template:
            continue  # a base model: no chat template
        if key == "tokenizer.ggml.pre" and c.get("pre"):
            val = c["pre"].encode()
        if key == "tokenizer.ggml.add_bos_token" and c.get("add_bos") is not None:
            val = bool(c["add_bos"])
        w.add_key_value(key, val, vtype, sub)
        if vtype != VT.ARRAY:
            tok_facts[key] = val.decode("utf-8", "replace") if isinstance(val, bytes) else val
        else:
            tok_facts[key] = len(val)
    have = {k for k, *_ in tok}
    if c.get("pre") and "tokenizer.ggml.pre" not in have:
        w.add_key_value("tokenizer.ggml.pre", c["pre"], VT.STRING)
        tok_facts["tokenizer.ggml.pre"] = c["pre"]
    if c.get("add_bos") is not None and "tokenizer.ggml.add_bos_token" not in have:
        w.add_key_value("tokenizer.ggml.add_bos_token", bool(c["add_bos"]), VT.BOOL)
        tok_facts["tokenizer.ggml.add_bos_token"] = bool(c["add_bos"])

    if seed is None:
        seed = zlib.crc32(variant.encode())
    rng = np.random.default_rng(seed)
    wdt = np.float16 if dtype == "F16" else np.float32
    specs = tensor_specs(c)
    n_params = 0
    for tname, ne, kind in specs:
        shape = tuple(reversed(ne))
        if kind == "norm":
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32 if kind == "bias" else wdt)
        w.add_tensor(tname, arr)
        n_params += int(np.prod(ne))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    return {
        "path": str(out_path),
        "file_size": os.path.getsize(out_path),
        "architecture": a,
        "variant": variant,
        "name": name,
        "parameter_count": n_params,
        "context_length": c["n_ctx"],
        "embedding_length": c["n_embd"],
        "block_count": c["n_layer"],
        "feed_forward_length": c["n_ff"],
        "head_count": c["n_head"],
        "head_count_kv": c["n_head_kv"],
        "head_dim": c["head_dim"],
        "sliding_window": c.get("sliding_window"),
        "vocab_size": VOCAB,
        "file_type": FILE_TYPES[dtype],
        "quantization": dtype,
        "tokenizer_pre": tok_facts.get("tokenizer.ggml.pre"),
        "add_bos_token": tok_facts.get("tokenizer.ggml.add_bos_token"),
        "bos_token_id": tok_facts.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": tok_facts.get("tokenizer.ggml.eos_token_id"),
        "n_tensors": len(specs),
        "tensors": {n: list(ne) for n, ne, _ in specs},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch", choices=sorted(set(ARCHS) | set(ALIASES)))
    p.add_argument("out")
    p.add_argument("--source", default=None, help="GGUF to copy the tokenizer from (default: $HYPERLLAMA_TEST_MODEL "
                   "or ~/.cache/hyperllama/models/SmolLM2-135M-Instruct.Q4_1.gguf)")
    p.add_argument("--f32", action="store_true", help="F32 matrices (general.file_type 0) instead of F16")
    p.add_argument("--tensors", action="store_true", help="list every tensor's shape in the JSON output")
    args = p.parse_args(argv)
    facts = build(args.arch, args.out, args.source, dtype="F32" if args.f32 else "F16")
    if not args.tensors:
        facts.pop("tensors")
    json.dump(facts, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

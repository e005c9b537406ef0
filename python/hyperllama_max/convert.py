"""A GGUF file -> a Hugging Face model directory that MAX loads.

MAX's CPU pipelines take float32 weights for the llama architecture but not llama.cpp's Q4_1
and friends, and MAX reads its tokenizer and chat template the Hugging Face way. So the sidecar
prepares, offline and once per GGUF digest:

- ``model.safetensors``: every tensor dequantized to float32 under its Hugging Face name. The
  query and key projections are un-permuted: llama.cpp's converter interleaves their rotary
  halves, Hugging Face's llama keeps them split.
- ``config.json``: ``LlamaForCausalLM`` with the sizes from the GGUF's metadata.
- ``tokenizer.json`` / ``tokenizer_config.json`` / ``generation_config.json``: the byte-level BPE
  tokenizer rebuilt from the GGUF's vocabulary and merges, its chat template, and the end of
  turn. GGUFs often name the end of *text* as eos (SmolLM2 says ``<|endoftext|>``) while chat
  turns end with ``<|im_end|>``; both stop generation.

The directory is written beside its final name and renamed into place, so a crash never leaves
a half-prepared model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

SUPPORTED_ARCHITECTURES = {"llama"}

# GGUF tensor names (per block) -> Hugging Face llama names.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# llama.cpp token types (llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4


class ConversionError(Exception):
    """The GGUF cannot be turned into a model MAX serves (a clear message for the caller)."""


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's ``permute`` of a query/key projection (rows grouped per head)."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _hf_name(gguf_name: str) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, idx, part = base.split(".", 2)
        hf = _BLOCK_NAMES.get(part)
        return f"model.layers.{idx}.{hf}.{suffix}" if hf else None
    hf = _TOP_NAMES.get(base)
    return f"{hf}.{suffix}" if hf else None


def _tokenizer_files(reader: Any, context: int) -> tuple[dict, dict, dict]:
    """tokenizer.json, tokenizer_config.json and the eos ids, from the GGUF's tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConversionError(
            f"the GGUF's tokenizer is {kind!r}; the MAX sidecar rebuilds byte-level BPE ('gpt2') tokenizers only"
        )
    tokens: list[str] = list(_field(reader, "tokenizer.ggml.tokens"))
    types: list[int] = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    pre = _field(reader, "tokenizer.ggml.pre", "default")

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # llama.cpp's "smollm" pre-tokenizer splits digits one by one before the GPT-2 split.
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t, ty in zip(tokens, types) if ty in (_CONTROL, _USER_DEFINED)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    def token(key: str) -> str | None:
        i = _field(reader, key)
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    eos = token("tokenizer.ggml.eos_token_id")
    template = _field(reader, "tokenizer.chat_template")
    eos_ids = [i for i in [_field(reader, "tokenizer.ggml.eos_token_id"), _field(reader, "tokenizer.ggml.eot_token_id")] if isinstance(i, int)]
    # Chat turns end with the template's end-of-turn token, whatever the GGUF calls eos.
    turn_end = None
    for candidate in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if template and candidate in template and candidate in tokens:
            turn_end = candidate
            eos_ids.append(tokens.index(candidate))
            break
    eos_ids = sorted(set(eos_ids))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": turn_end or eos,
        "pad_token": token("tokenizer.ggml.padding_token_id") or eos,
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "additional_special_tokens": [t for t in specials if t not in (turn_end, eos)],
    }
    if template:
        config["chat_template"] = template
    return json.loads(tok.to_str()), config, {"eos_token_id": eos_ids}


def convert(gguf_path: Path, out_dir: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Writes the Hugging Face directory for ``gguf_path`` at ``out_dir`` (atomically)."""
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise ConversionError(f"{gguf_path} is not a readable GGUF file: {e}") from e
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"architecture {arch!r} is not supported by the MAX sidecar (supported: llama)")

    def meta(key: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{key}", default)

    n_head = int(meta("attention.head_count"))
    n_head_kv = int(meta("attention.head_count_kv", n_head))
    hidden = int(meta("embedding_length"))
    context = int(meta("context_length", 2048))
    names = {t.name for t in reader.tensors}
    vocab = len(_field(reader, "tokenizer.ggml.tokens") or [])
    tokenizer, tokenizer_config, generation = _tokenizer_files(reader, context)

    tensors: dict[str, np.ndarray] = {}
    for i, t in enumerate(reader.tensors):
        hf = _hf_name(t.name)
        if hf is None:
            continue  # e.g. rope_freqs: computed from the config instead
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim != len(t.shape) else w
        if t.name.endswith("attn_q.weight"):
            w = _unpermute(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = _unpermute(w, n_head_kv)
        tensors[hf] = np.ascontiguousarray(w)
        if i % 20 == 0:
            progress(f"dequantizing tensors {i + 1}/{len(reader.tensors)}")

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "head_dim": hidden // n_head,
        "hidden_act": "silu",
        "max_position_embeddings": context,
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "vocab_size": vocab or tensors["model.embed_tokens.weight"].shape[0],
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": generation["eos_token_id"],
        "attention_bias": False,
        "mlp_bias": False,
    }

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        progress("writing float32 safetensors")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, value in [
            ("config.json", config),
            ("generation_config.json", {**generation, "bos_token_id": config["bos_token_id"]}),
            ("tokenizer.json", tokenizer),
            ("tokenizer_config.json", tokenizer_config),
        ]:
            (tmp / name).write_text(json.dumps(value, indent=1, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def prepared_dir(gguf_path: Path, cache: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """The prepared directory for ``gguf_path``, converting it once per content digest."""
    progress("hashing the GGUF")
    digest = file_digest(gguf_path)
    out = Path(cache) / f"sha256-{digest}"
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert(gguf_path, out, progress)

#!/usr/bin/env python3
"""Render a chat template the way Hugging Face transformers' apply_chat_template(tokenize=False) does.

Mirrors transformers 5.25.0, src/transformers/utils/chat_template_utils.py:
  _cached_compile_jinja_template (environment, filters, globals, {% generation %} extension),
  render_jinja_template (what variables the template sees), _alias_reasoning_fields,
and tokenization_utils_base.apply_chat_template (_normalize_chat_messages drops None-valued
message keys; template_kwargs = {**special_tokens_map, **kwargs}).

Usage:
  render.py TEMPLATE.jinja [--messages JSON|@file] [--tools JSON|@file] [--no-gen]
            [--bos TOKEN] [--eos TOKEN] [--var k=JSON ...] [--date YYYY-MM-DD]
  render.py --all DIR     # render every *.jinja in DIR with the default [system, user] chat
Prints the rendered string (repr with --repr).
"""
import argparse
import json
import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.runtime
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

_FIXED_NOW = None  # datetime to use for strftime_now (None = real clock, as transformers does)


def compile_template(chat_template):
    """Copy of transformers 5.25.0 _cached_compile_jinja_template (minus the lru_cache/version guard)."""

    class AssistantTracker(Extension):
        # Tracks the indices of assistant-generated text; {% generation %} renders its body unchanged.
        tags = {"generation"}

        def __init__(self, environment):
            super().__init__(environment)
            environment.extend(activate_tracker=self.activate_tracker)
            self._tracking = ContextVar("assistant_tracker", default=None)

        def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context, caller):
            rv = caller()
            if (tracking := self._tracking.get()) is not None:
                rendered_blocks, generation_indices = tracking
                start_index = len("".join(rendered_blocks))
                generation_indices.append((start_index, start_index + len(rv)))
            return rv

        def is_active(self):
            return self._tracking.get() is not None

        @contextmanager
        def activate_tracker(self, rendered_blocks, generation_indices):
            if self.is_active():
                raise ValueError("AssistantTracker should not be reused before closed")
            token = self._tracking.set((rendered_blocks, generation_indices))
            try:
                yield
            finally:
                self._tracking.reset(token)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers overrides Jinja's tojson: no HTML escaping, exposes indent/separators/sort_keys
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return (_FIXED_NOW or datetime.now()).strftime(format)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
                )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(chat_template)


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def normalize_messages(messages):
    # apply_chat_template -> _normalize_chat_messages: drop keys whose value is None
    out = [{k: v for k, v in m.items() if v is not None} for m in messages]
    # render_jinja_template -> _alias_reasoning_fields
    aliased = []
    for m in out:
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        aliased.append(m)
    return aliased


def render(chat_template, messages, tools=None, documents=None, add_generation_prompt=True,
           bos_token="<s>", eos_token="</s>", **kwargs):
    compiled = compile_template(chat_template)
    template_kwargs = {"bos_token": bos_token, "eos_token": eos_token, **kwargs}
    return compiled.render(messages=normalize_messages(messages), tools=tools, documents=documents,
                           add_generation_prompt=add_generation_prompt, **template_kwargs)


# bos/eos per family, as in each model's tokenizer_config.json (special_tokens_map)
TOKENS = {
    "qwen2.5": ("", "<|im_end|>"),  # Qwen2.5 has bos_token null; '' used here
    "qwen3": ("", "<|im_end|>"),
    "qwen3-coder": ("", "<|im_end|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v3": ("<s>", "</s>"),
    "mistral-tekken": ("<s>", "</s>"),
    "gemma3": ("<bos>", "<eos>"),
    "phi4": ("<|endoftext|>", "<|im_end|>"),
    "deepseek-r1-distill": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gpt-oss": ("<|startoftext|>", "<|return|>"),
    "smollm3": ("", "<|im_end|>"),
}

DEFAULT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
]


def _load(arg):
    if arg is None:
        return None
    if arg.startswith("@"):
        with open(arg[1:]) as f:
            return json.load(f)
    return json.loads(arg)


def main():
    global _FIXED_NOW
    ap = argparse.ArgumentParser()
    ap.add_argument("template", nargs="?")
    ap.add_argument("--all", metavar="DIR")
    ap.add_argument("--messages")
    ap.add_argument("--tools")
    ap.add_argument("--no-gen", action="store_true", help="add_generation_prompt=False")
    ap.add_argument("--bos")
    ap.add_argument("--eos")
    ap.add_argument("--var", action="append", default=[], help="extra template kwarg k=JSON")
    ap.add_argument("--date", help="fix strftime_now to this date (YYYY-MM-DD)")
    ap.add_argument("--repr", action="store_true")
    a = ap.parse_args()
    if a.date:
        _FIXED_NOW = datetime.strptime(a.date, "%Y-%m-%d")
    extra = {}
    for kv in a.var:
        k, v = kv.split("=", 1)
        extra[k] = json.loads(v)
    messages = _load(a.messages) or DEFAULT_MESSAGES
    tools = _load(a.tools)
    paths = []
    if a.all:
        paths = sorted(os.path.join(a.all, p) for p in os.listdir(a.all) if p.endswith(".jinja"))
    elif a.template:
        paths = [a.template]
    else:
        ap.error("give a template or --all DIR")
    failures = 0
    for p in paths:
        name = os.path.basename(p)[: -len(".jinja")]
        bos, eos = TOKENS.get(name, ("<s>", "</s>"))
        bos = a.bos if a.bos is not None else bos
        eos = a.eos if a.eos is not None else eos
        with open(p, encoding="utf-8") as f:
            src = f.read()
        try:
            out = render(src, messages, tools=tools, add_generation_prompt=not a.no_gen,
                         bos_token=bos, eos_token=eos, **extra)
            status = "OK"
        except Exception as e:  # noqa: BLE001
            out = f"{type(e).__name__}: {e}"
            status = "FAIL"
            failures += 1
        if len(paths) > 1:
            print(f"===== {name}: {status}")
        print(repr(out) if a.repr or len(paths) > 1 else out, end="\n" if (a.repr or len(paths) > 1) else "")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

"""Chat-template conformance: the real templates of a dozen model families (tests/fixtures/
templates, sources in SOURCES.md), each rendered for the same conversations by `hyperllama
template` (the renderer the server uses) and by Python's jinja2 under Hugging Face
transformers' settings (hf_render.py, a copy of transformers' apply_chat_template path);
the two must agree byte for byte, and where jinja2 refuses a conversation (a template's
raise_exception), so must HyperLlama."""

import json
import pathlib
import subprocess

import pytest

import hf_render
from conftest import BINARY, ROOT

TEMPLATES = ROOT / "tests" / "fixtures" / "templates"
NOW = "2024-07-26"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "description": "Forecast days"},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 2}}}

CONVERSATIONS = {
    "system": ([{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"}], None, {}),
    "no-system": ([{"role": "user", "content": "What is 2+2?"}], None, {}),
    "multi-turn": ([{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello. How can I help?"},
                    {"role": "user", "content": "Name a colour.\nJust one, with \"quotes\" and ünïcödé."}], None, {}),
    "tools": ([{"role": "system", "content": "You can call tools."},
               {"role": "user", "content": "What's the weather in Paris?"}], [WEATHER, SEARCH], {}),
    "tool-results": ([{"role": "user", "content": "What's the weather in Paris?"},
                      {"role": "assistant", "content": "", "tool_calls": [CALL]},
                      {"role": "tool", "content": "{\"temperature\": 21, \"sky\": \"clear\"}",
                       "tool_call_id": "call_1", "name": "get_weather"},
                      {"role": "user", "content": "Thanks. And tomorrow?"}], [WEATHER], {}),
    "thinking-on": ([{"role": "user", "content": "Why is the sky blue?"}], None, {"enable_thinking": True}),
    "thinking-off": ([{"role": "user", "content": "Why is the sky blue?"}], None, {"enable_thinking": False}),
    "reasoning-history": ([{"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "4", "reasoning_content": "Adding two and two."},
                           {"role": "user", "content": "And 3+3?"}], None, {"reasoning_effort": "low"}),
}


def templates():
    return sorted(p.stem for p in TEMPLATES.glob("*.jinja"))


def hyperllama_render(name, messages, tools, variables, generation_prompt=True):
    bos, eos = hf_render.TOKENS.get(name, ("<s>", "</s>"))
    args = [str(BINARY), "template", "--file", str(TEMPLATES / f"{name}.jinja"), "--bos", bos, "--eos", eos,
            "--now", NOW, "--messages", json.dumps(messages)]
    if tools:
        args += ["--tools", json.dumps(tools)]
    if not generation_prompt:
        args.append("--no-generation-prompt")
    for k, v in variables.items():
        args += ["--var", f"{k}={json.dumps(v)}"]
    r = subprocess.run(args, capture_output=True, timeout=60)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def python_render(name, messages, tools, variables, generation_prompt=True):
    bos, eos = hf_render.TOKENS.get(name, ("<s>", "</s>"))
    hf_render._FIXED_NOW = hf_render.datetime.strptime(NOW, "%Y-%m-%d")
    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return hf_render.render(source, json.loads(json.dumps(messages)), tools=tools,
                            add_generation_prompt=generation_prompt, bos_token=bos, eos_token=eos, **variables)


@pytest.mark.parametrize("name", templates())
def test_every_conversation_renders_as_transformers_does(name):
    rendered = 0
    presents_tools = "tools" in (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    for convo, (messages, tools, variables) in CONVERSATIONS.items():
        if tools and not presents_tools:
            # A template that cannot show tools gets them described in the system message
            # (the documented fallback, docs/MODELS.md), where transformers would drop them.
            code, out, err = hyperllama_render(name, messages, tools, variables)
            assert code == 0, f"{name}/{convo}: {err}"
            assert all(t["function"]["name"] in out for t in tools) and "<tool_call>" in out, out
            continue
        for generation_prompt in (True, False):
            try:
                want = python_render(name, messages, tools, variables, generation_prompt)
            except Exception as e:  # noqa: BLE001  (the template refused the conversation)
                code, out, err = hyperllama_render(name, messages, tools, variables, generation_prompt)
                assert code != 0, f"{name}/{convo}: jinja2 refused ({e}) but HyperLlama rendered {out!r}"
                continue
            code, out, err = hyperllama_render(name, messages, tools, variables, generation_prompt)
            assert code == 0, f"{name}/{convo}: HyperLlama failed where jinja2 rendered: {err}"
            assert out == want, f"{name}/{convo} (generation prompt {generation_prompt}) differs"
            rendered += 1
    # Every template renders most conversations (a refusal of all would prove nothing).
    assert rendered >= len(CONVERSATIONS), f"{name}: only {rendered} renders"


def test_the_fixtures_cover_the_families():
    assert set(templates()) >= {"qwen2.5", "qwen3", "qwen3-coder", "llama3.1", "llama3.2", "mistral-v3",
                                "mistral-tekken", "gemma3", "phi4", "deepseek-r1-distill", "gpt-oss", "smollm3"}


def test_a_broken_template_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }}")
    r = subprocess.run([str(BINARY), "template", "--file", str(bad), "--messages", '[{"role":"user","content":"x"}]'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "does not compile" in r.stderr, r.stderr

"""The official `openai` Python client against `hyperllama serve`'s /v1 API, unchanged."""

import json

import openai
import pydantic
import pytest

MSGS = [{"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"}]


def test_models(ai):
    ids = [m.id for m in ai.models.list()]
    assert "smol:latest" in ids
    assert ai.models.retrieve("smol:latest").id == "smol:latest"
    with pytest.raises(openai.NotFoundError):
        ai.models.retrieve("no-such-model")


def test_chat_completion(ai):
    r = ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=30)
    assert "Paris" in r.choices[0].message.content
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    stream = ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=30, stream=True,
                                        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completion(ai):
    r = ai.completions.create(model="smol", prompt="The capital of France is", temperature=0, max_tokens=4)
    assert "Paris" in r.choices[0].text
    parts = list(ai.completions.create(model="smol", prompt="The capital of France is", temperature=0, max_tokens=4, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text


def test_embeddings_default_base64(ai):
    # The client asks for base64 by default and decodes it.
    r = ai.embeddings.create(model="smol", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 576
    f = ai.embeddings.create(model="smol", input="hello", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(f.data[0].embedding, r.data[0].embedding)) < 1e-5


def test_json_schema_and_json_object(ai):
    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        age: int

    r = ai.chat.completions.create(
        model="smol", temperature=0, max_tokens=100, messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema()}})
    Person.model_validate_json(r.choices[0].message.content)
    r = ai.chat.completions.create(
        model="smol", temperature=0, max_tokens=120, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}])
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_tool_calls(ai):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    schema = {"type": "object", "properties": {"name": {"const": "get_weather"},
              "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}},
              "required": ["name", "arguments"]}
    r = ai.chat.completions.create(
        model="smol", temperature=0, max_tokens=60, tools=tools,
        response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_errors_are_typed(ai):
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="no-such-model", messages=MSGS)
    with pytest.raises(openai.BadRequestError) as e:
        ai.chat.completions.create(model="smol", messages=MSGS, n=1000)
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="smol", messages=[])
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="smol", messages=[{"role": "user", "content": "word " * 3000}])
    r = ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=2)
    assert r.choices[0].message.content is not None


def test_logprobs(ai):
    r = ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=12, logprobs=True,
                                   top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        # Greedy: the sampled token is the most likely one.
        assert t.token == t.top_logprobs[0].token and abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5
        assert sum(2.718281828 ** a.logprob for a in t.top_logprobs) <= 1 + 1e-4
    streamed = [c for c in ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=12,
                                                      logprobs=True, top_logprobs=3, stream=True) if c.choices]
    toks = [t.token for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert toks == [t.token for t in content]
    c = ai.completions.create(model="smol", prompt="The capital of France is", temperature=0, max_tokens=4, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == 4 and all(x <= 0 for x in lp.token_logprobs)
    assert all(len(alts) == 2 for alts in lp.top_logprobs)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=2, logprobs=True, top_logprobs=21)


def test_n_choices(ai):
    greedy = ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=16, n=3)
    texts = [c.message.content for c in greedy.choices]
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert texts[0] == texts[1] == texts[2]
    one = ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=16)
    assert texts[0] == one.choices[0].message.content
    assert greedy.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens
    sampled = ai.chat.completions.create(model="smol", temperature=1.0, max_tokens=24, n=3, seed=42,
                                         messages=[{"role": "user", "content": "Write a short poem about the sea."}])
    assert len({c.message.content for c in sampled.choices}) > 1
    again = ai.chat.completions.create(model="smol", temperature=1.0, max_tokens=24, n=3, seed=42,
                                       messages=[{"role": "user", "content": "Write a short poem about the sea."}])
    assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]
    # Streamed: chunks of every choice, each ending with its finish_reason.
    chunks = [c for c in ai.chat.completions.create(model="smol", messages=MSGS, temperature=0, max_tokens=16, n=2,
                                                    stream=True) if c.choices]
    by = {0: "", 1: ""}
    for c in chunks:
        by[c.choices[0].index] += c.choices[0].delta.content or ""
    assert by[0] == by[1] == texts[0]
    with pytest.raises(openai.BadRequestError, match="n"):
        ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=2, n=1000)


def test_streamed_tool_calls(ai):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                             "required": ["city"]}}}]
    # Greedy, SmolLM2 writes exactly two calls for this (a grammar makes each one parse).
    ask = [{"role": "user", "content": "Get the weather for Paris, then for Tokyo."}]
    whole = ai.chat.completions.create(model="smol", temperature=0, max_tokens=120, tools=tools, tool_choice="required",
                                       messages=ask)
    assert whole.choices[0].finish_reason == "tool_calls"
    calls = {}
    finish = None
    for c in ai.chat.completions.create(model="smol", temperature=0, max_tokens=120, tools=tools, tool_choice="required",
                                        messages=ask, stream=True):
        if not c.choices:
            continue
        finish = c.choices[0].finish_reason or finish
        for d in c.choices[0].delta.tool_calls or []:
            if d.id:
                assert d.index not in calls, "one id per call"
                calls[d.index] = {"id": d.id, "name": d.function.name, "args": ""}
            calls[d.index]["args"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1], calls
    assert calls[0]["id"] != calls[1]["id"]
    assert [json.loads(c["args"])["city"] for c in calls.values()] == ["Paris", "Tokyo"]
    want = whole.choices[0].message.tool_calls
    assert [c["name"] for c in calls.values()] == [w.function.name for w in want]
    assert [json.loads(c["args"]) for c in calls.values()] == [json.loads(w.function.arguments) for w in want]
    # A named function is forced too.
    named = ai.chat.completions.create(model="smol", temperature=0, max_tokens=80, tools=tools, messages=ask,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_prompt_past_the_context_and_truncation(ai, server):
    import requests
    long = [{"role": "user", "content": "tell me more " * 400}, {"role": "assistant", "content": "ok " * 600},
            {"role": "user", "content": "word " * 900}, {"role": "assistant", "content": "fine"},
            {"role": "user", "content": "What is the capital of France?"}]
    with pytest.raises(openai.BadRequestError, match="context"):
        ai.chat.completions.create(model="smol", messages=long, max_tokens=4)
    r = requests.post(f"{server}/v1/chat/completions", timeout=120, json={
        "model": "smol", "messages": [{"role": "system", "content": "Be brief."}, *long], "max_tokens": 4,
        "truncate": True, "temperature": 0})
    assert r.status_code == 200, r.text
    assert int(r.headers["x-hyperllama-truncated"]) >= 1
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=5000)
    metrics = requests.get(f"{server}/metrics", timeout=30).text
    assert 'hyperllama_truncated_prompts_total{model="smol:latest"}' in metrics


def test_token_utilities(ai, server):
    import requests
    t = requests.post(f"{server}/tokenize", json={"model": "smol", "content": "Hello world", "with_pieces": True},
                      timeout=60).json()
    assert "".join(p["piece"] for p in t["tokens"]) == "Hello world"
    ids = [p["id"] for p in t["tokens"]]
    assert requests.post(f"{server}/detokenize", json={"model": "smol", "tokens": ids}, timeout=60).json()["content"] == "Hello world"
    a = requests.post(f"{server}/apply-template", json={"model": "smol", "messages": MSGS}, timeout=60).json()
    assert "What is the capital of France?" in a["prompt"] and a["prompt"].rstrip().endswith("assistant")
    r = ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=1, temperature=0)
    assert a["tokens"] == r.usage.prompt_tokens
    bad = requests.post(f"{server}/detokenize", json={"model": "smol", "tokens": [-1]}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    bad = requests.post(f"{server}/tokenize", json={"model": "no-such-model", "content": "x"}, timeout=60)
    assert bad.status_code == 404

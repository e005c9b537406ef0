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
        ai.chat.completions.create(model="smol", messages=MSGS, n=3)
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="smol", messages=[])
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="smol", messages=[{"role": "user", "content": "word " * 3000}])
    r = ai.chat.completions.create(model="smol", messages=MSGS, max_tokens=2)
    assert r.choices[0].message.content is not None

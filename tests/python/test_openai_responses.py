"""The official `openai` client's Responses API (`client.responses`) against `hyperllama serve`,
with strict response validation: every object and stream event must have the fields the
client's own models require."""

import json

import openai
import pydantic
import pytest

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"]}}
Q = "What is the capital of France?"
INSTR = "Answer in one short sentence."


@pytest.fixture()
def rc(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120,
                         _strict_response_validation=True)


def test_text_and_instructions(rc):
    r = rc.responses.create(model="smol", input=Q, instructions=INSTR, temperature=0, max_output_tokens=30)
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert "Paris" in r.output_text
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    short = rc.responses.create(model="smol", input=Q, instructions=INSTR, temperature=0, max_output_tokens=3)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"


def test_json_schema(rc):
    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        country: str = pydantic.Field(max_length=20)

    schema = City.model_json_schema()
    r = rc.responses.create(model="smol", input="Name a city and its country.", temperature=0, max_output_tokens=80,
                            text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    City.model_validate_json(r.output_text)
    r = rc.responses.create(model="smol", input="Describe a cat as JSON with a name and an age.", temperature=0,
                            max_output_tokens=160, text={"format": {"type": "json_object"}})
    assert r.status == "completed", r.status
    assert isinstance(json.loads(r.output_text), dict)


def test_function_call_round_trip_by_previous_response_id(rc):
    r = rc.responses.create(model="smol", input="What is the weather in Paris?", tools=[WEATHER], temperature=0,
                            tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60)
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and call.call_id
    assert isinstance(json.loads(call.arguments)["city"], str)
    follow = rc.responses.create(model="smol", previous_response_id=r.id, tools=[WEATHER], temperature=0,
                                 max_output_tokens=40,
                                 input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}])
    assert follow.output_text.strip()
    # The continuation carried the earlier conversation: a longer prompt, mostly from the cache.
    assert follow.usage.input_tokens > r.usage.input_tokens
    assert follow.usage.input_tokens_details.cached_tokens > 0


def test_store_get_delete(rc):
    r = rc.responses.create(model="smol", input=Q, temperature=0, max_output_tokens=8)
    got = rc.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    rc.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        rc.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        rc.responses.create(model="smol", input="hi", previous_response_id=r.id)
    unstored = rc.responses.create(model="smol", input=Q, temperature=0, max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        rc.responses.retrieve(unstored.id)


def test_stream_events(rc):
    r = rc.responses.create(model="smol", input=Q, instructions=INSTR, temperature=0, max_output_tokens=20)
    with rc.responses.stream(model="smol", input=Q, instructions=INSTR, temperature=0, max_output_tokens=20) as s:
        events = list(s)
        final = s.get_final_response()
    assert events[0].type == "response.created"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == r.output_text
    assert events[-1].type == "response.completed"
    # A streamed call: arguments as deltas.
    with rc.responses.stream(model="smol", input="What is the weather in Paris?", tools=[WEATHER], temperature=0,
                             tool_choice="required", parallel_tool_calls=False, max_output_tokens=60) as s:
        events = list(s)
        final = s.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert calls and all(c.name == "get_weather" for c in calls)
    for call in calls:
        args = "".join(e.delta for e in events
                       if e.type == "response.function_call_arguments.delta" and e.item_id == call.id)
        assert args == call.arguments
    assert json.loads(calls[0].arguments)["city"]


def test_bad_input(rc, server):
    import requests
    for body, param in [({"model": "smol"}, "input"), ({"input": "hi"}, "model"),
                        ({"model": "smol", "input": [{"type": "item_reference", "id": "x"}]}, "input"),
                        ({"model": "smol", "input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
                        ({"model": "smol", "input": "hi", "truncation": "sometimes"}, "truncation"),
                        ({"model": "smol", "input": 5}, "input")]:
        r = requests.post(f"{server}/v1/responses", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, r.text
    with pytest.raises(openai.BadRequestError):
        rc.responses.create(model="smol", input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "auto"}]}])
    assert rc.responses.create(model="smol", input="hi", max_output_tokens=2).usage.output_tokens == 2

"""The official `anthropic` Python client against `hyperllama serve`'s /v1/messages, unchanged.

The client passes sampling parameters only through `extra_body`; `temperature: 0` makes every
answer here greedy, so a streamed answer must equal the same request's non-streamed one."""

import json

import anthropic
import pytest
import requests

from conftest import start_server, stop

GREEDY = {"temperature": 0}
ASK = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM = "Answer in one short sentence."
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"]}}


@pytest.fixture()
def ac(server):
    return anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0, timeout=120,
                               _strict_response_validation=True)


def test_create_text_system_and_limits(ac):
    m = ac.messages.create(model="smol", max_tokens=30, system=SYSTEM, messages=ASK, extra_body=GREEDY)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert "Paris" in m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.output_tokens > 0
    # The prompt, counted: computed tokens plus those read from the prompt cache.
    n = ac.messages.count_tokens(model="smol", system=SYSTEM, messages=ASK).input_tokens
    assert n == m.usage.input_tokens + m.usage.cache_read_input_tokens
    short = ac.messages.create(model="smol", max_tokens=3, system=SYSTEM, messages=ASK, extra_body=GREEDY)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    # A stop sequence from the middle of the greedy answer ends it there, and is named.
    words = m.content[0].text.split()
    assert len(words) >= 3, m.content[0].text
    stop_word = words[2]
    cut = ac.messages.create(model="smol", max_tokens=30, system=SYSTEM, messages=ASK, extra_body=GREEDY,
                             stop_sequences=[stop_word, "nowhere in the answer"])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop_word
    assert m.content[0].text.startswith(cut.content[0].text) and stop_word not in cut.content[0].text


def test_stream_matches_create(ac):
    m = ac.messages.create(model="smol", max_tokens=24, system=SYSTEM, messages=ASK, extra_body=GREEDY)
    with ac.messages.stream(model="smol", max_tokens=24, system=SYSTEM, messages=ASK, extra_body=GREEDY) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == m.content[0].text == final.content[0].text
    assert final.stop_reason == m.stop_reason and final.usage.output_tokens == m.usage.output_tokens
    # The raw events come in Anthropic's order.
    kinds = [e.type for e in ac.messages.create(model="smol", max_tokens=8, messages=ASK, stream=True, extra_body=GREEDY)]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.index("content_block_start") < kinds.index("content_block_delta") < kinds.index("content_block_stop")


def test_tool_use_round_trip(ac):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    m = ac.messages.create(model="smol", max_tokens=60, messages=ask, tools=[WEATHER],
                           tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert isinstance(use.input["city"], str) and use.input["city"]
    # Streamed, the arguments arrive as input_json_delta pieces that add up to the same input.
    with ac.messages.stream(model="smol", max_tokens=60, messages=ask, tools=[WEATHER],
                            tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY) as s:
        events = list(s)
        final = s.get_final_message()
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    assert json.loads(partial) == use.input
    assert next(b for b in final.content if b.type == "tool_use").input == use.input
    # The result goes back; the model answers in text.
    follow = ac.messages.create(model="smol", max_tokens=40, tools=[WEATHER], extra_body=GREEDY, messages=[
        *ask, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 C"}]}])
    assert follow.stop_reason in ("end_turn", "max_tokens")
    assert any(b.type == "text" and b.text.strip() for b in follow.content)


def test_thinking_budget_is_enforced(think_model, server):
    # The template opens the reasoning block; with a budget of 4 tokens the server closes it
    # itself (writes `</think>`), and the answer follows as text.
    ac = anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0, timeout=120)
    story = [{"role": "user", "content": "Write a short story about a cat."}]
    budget = {"type": "enabled", "budget_tokens": 4}
    m = ac.messages.create(model=think_model, max_tokens=40, messages=story, extra_body=GREEDY, thinking=budget)
    kinds = [b.type for b in m.content]
    assert kinds == ["thinking", "text"], kinds
    assert m.content[0].thinking.strip() and "</think>" not in m.content[0].thinking
    assert m.content[1].text.strip() and "think>" not in m.content[1].text
    count = ac.messages.count_tokens(model=think_model, messages=[{"role": "user", "content": m.content[0].thinking}])
    assert count.input_tokens > 0
    with ac.messages.stream(model=think_model, max_tokens=40, messages=story, extra_body=GREEDY, thinking=budget) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == kinds
    assert final.content[0].thinking == m.content[0].thinking and final.content[1].text == m.content[1].text
    # Without a budget the same request keeps reasoning to the limit.
    free = ac.messages.create(model=think_model, max_tokens=40, messages=story, extra_body=GREEDY,
                              thinking={"type": "adaptive"})
    assert len(free.content[0].thinking) > len(m.content[0].thinking)


def test_errors_are_the_clients_own_types(ac, server):
    with pytest.raises(anthropic.NotFoundError):
        ac.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    with pytest.raises(anthropic.BadRequestError, match="video"):
        ac.messages.create(model="smol", max_tokens=5, messages=[{"role": "user", "content": [{"type": "video"}]}])
    with pytest.raises(anthropic.BadRequestError, match="image"):
        ac.messages.create(model="smol", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        ac.messages.create(model="smol", max_tokens=100000, messages=ASK)
    # Without max_tokens (the SDK always sends it, so raw HTTP): Anthropic's error shape.
    r = requests.post(f"{server}/v1/messages", json={"model": "smol", "messages": ASK}, timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    r = requests.post(f"{server}/v1/messages", json={"model": "smol", "max_tokens": "ten", "messages": ASK}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # Still serving.
    assert ac.messages.create(model="smol", max_tokens=3, messages=ASK).usage.output_tokens == 3


def test_keys_and_rate_limits(tmp_path):
    from conftest import model_path
    proc, base = start_server(str(tmp_path), "--api-key", "anthropic-test-key-0123456789", "--rate-limit-rpm", "3")
    try:
        good = anthropic.Anthropic(base_url=base, api_key="anthropic-test-key-0123456789", max_retries=0, timeout=120)
        with open(model_path(), "rb") as f:
            digest = "sha256:" + __import__("hashlib").sha256(f.read()).hexdigest()
        # x-api-key and Bearer are both accepted (the SDK sends Bearer).
        r = requests.post(f"{base}/api/blobs/{digest}", data=open(model_path(), "rb"),
                          headers={"x-api-key": "anthropic-test-key-0123456789"}, timeout=120)
        assert r.status_code in (200, 201), r.text
        r = requests.post(f"{base}/api/create", headers={"x-api-key": "anthropic-test-key-0123456789"}, timeout=120,
                          json={"model": "smol", "files": {"m.gguf": digest}, "stream": False})
        assert r.status_code == 200, r.text
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
                model="smol", max_tokens=2, messages=ASK)
        good.messages.create(model="smol", max_tokens=2, messages=ASK)
        with pytest.raises(anthropic.RateLimitError) as e:
            for _ in range(3):
                good.messages.create(model="smol", max_tokens=2, messages=ASK)
        assert e.value.response.headers.get("retry-after")
        assert e.value.body["error"]["type"] == "rate_limit_error"
    finally:
        stop(proc)

"""The official `ollama` Python client against `hyperllama serve`, unchanged."""

import json

import ollama
import pydantic
import pytest

GREEDY = {"temperature": 0, "num_predict": 24}


def test_list_and_show(oc):
    names = [m.model for m in oc.list().models]
    assert "smol:latest" in names
    m = next(m for m in oc.list().models if m.model == "smol:latest")
    assert m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"
    assert m.size > 90_000_000
    show = oc.show("smol")
    assert show.modelinfo["general.architecture"] == "llama"
    assert "<|im_start|>" in show.template
    assert show.details.format == "gguf"


def test_generate_streaming_and_not(oc):
    whole = oc.generate(model="smol", prompt="Why is the sky blue?", options=GREEDY)
    assert whole.done and whole.eval_count == 24 and whole.done_reason == "length"
    assert whole.total_duration > 0 and whole.prompt_eval_count > 0
    parts = list(oc.generate(model="smol", prompt="Why is the sky blue?", options=GREEDY, stream=True))
    assert parts[-1].done
    assert "".join(p.response for p in parts) == whole.response


def test_chat_streaming_and_not(oc):
    msgs = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]
    r = oc.chat(model="smol", messages=msgs, options={"temperature": 0, "num_predict": 30})
    assert "Paris" in r.message.content
    assert r.message.role == "assistant"
    chunks = list(oc.chat(model="smol", messages=msgs, options={"temperature": 0, "num_predict": 30}, stream=True))
    assert "".join(c.message.content for c in chunks) == r.message.content
    assert chunks[-1].done


def test_chat_json_mode_and_schema(oc):
    r = oc.chat(model="smol", format="json", options={"temperature": 0, "num_predict": 120},
                messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}])
    assert isinstance(json.loads(r.message.content), dict)

    class City(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=30)
        population: int

    r = oc.chat(model="smol", format=City.model_json_schema(), options={"temperature": 0, "num_predict": 100},
                messages=[{"role": "user", "content": "Tell me about Paris."}])
    City.model_validate_json(r.message.content)


def test_embed(oc):
    r = oc.embed(model="smol", input=["a cat", "a dog"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    assert abs(sum(x * x for x in r.embeddings[0]) - 1.0) < 1e-3
    legacy = oc.embeddings(model="smol", prompt="a cat")
    assert len(legacy.embedding) == 576


def test_ps_copy_delete(oc):
    oc.generate(model="smol", prompt="hi", options={"num_predict": 2})
    assert any(m.model == "smol:latest" for m in oc.ps().models)
    oc.copy("smol", "smol-copy")
    assert any(m.model == "smol-copy:latest" for m in oc.list().models)
    oc.delete("smol-copy")
    assert not any(m.model == "smol-copy:latest" for m in oc.list().models)
    with pytest.raises(ollama.ResponseError) as e:
        oc.show("smol-copy")
    assert e.value.status_code == 404


def test_errors_are_response_errors(oc):
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.generate(model="smol", prompt="hi", options={"temperature": -3})
    assert e.value.status_code == 400
    assert "temperature" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.generate(model="smol", prompt="word " * 3000, raw=True)
    assert e.value.status_code == 400
    # Still serving.
    assert oc.generate(model="smol", prompt="hi", options={"num_predict": 2}).done


def test_create_from_model_and_pull(oc):
    r = oc.create(model="smol-terse", from_="smol", system="Answer in one word.",
                  parameters={"temperature": 0, "num_predict": 8})
    assert r.status == "success"
    show = oc.show("smol-terse")
    assert "SYSTEM \"\"\"Answer in one word.\"\"\"" in show.modelfile
    assert "num_predict" in show.parameters
    assert oc.generate(model="smol-terse", prompt="Write a long essay about Rome.").eval_count == 8
    statuses = [p.status for p in oc.pull("smol", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert oc.pull("smol").status == "success"
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull("nobody/nothing")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull("not-a-local-model")
    assert e.value.status_code == 404
    oc.delete("smol-terse")


def test_pull_from_the_hub_with_progress(oc):
    events = list(oc.pull("hf.co/smol/SmolLM2-GGUF:Q4_1", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses
    downloads = [e for e in events if e.total]
    assert downloads and downloads[-1].completed == downloads[-1].total > 90_000_000
    # Listed as the client named it, as Ollama lists hub models.
    assert any(m.model == "hf.co/smol/SmolLM2-GGUF:Q4_1" for m in oc.list().models)
    r = oc.chat(model="hf.co/smol/SmolLM2-GGUF:Q4_1", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4})
    assert r.done


def test_think(oc, think_model):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    # The template opens the reasoning block; everything before `</think>` is thinking.
    r = oc.chat(model=think_model, messages=msgs, think=True, options={"temperature": 0, "num_predict": 20})
    assert r.message.thinking and r.message.thinking.strip()
    assert "<think>" not in (r.message.content or "") and "</think>" not in r.message.thinking
    chunks = list(oc.chat(model=think_model, messages=msgs, think=True, stream=True,
                          options={"temperature": 0, "num_predict": 20}))
    assert "".join(c.message.thinking or "" for c in chunks) == r.message.thinking
    # Off: the template is told so (it closes an empty block) and the model answers directly.
    off = oc.chat(model=think_model, messages=msgs, think=False, options={"temperature": 0, "num_predict": 20})
    assert not off.message.thinking and off.message.content.strip()
    g = oc.generate(model=think_model, prompt="What is the capital of France?", think=True,
                    options={"temperature": 0, "num_predict": 12})
    assert g.thinking and g.thinking.strip()
    # A model whose template does not reason refuses `think`, as Ollama does.
    with pytest.raises(ollama.ResponseError, match="does not support thinking") as e:
        oc.chat(model="smol", messages=msgs, think=True)
    assert e.value.status_code == 400


def test_logprobs(oc):
    r = oc.chat(model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
                logprobs=True, top_logprobs=2, options={"temperature": 0, "num_predict": 8})
    assert len(r.logprobs) == r.eval_count
    assert "".join(l.token for l in r.logprobs) == r.message.content
    for l in r.logprobs:
        assert l.logprob <= 0 and len(l.top_logprobs) == 2 and l.top_logprobs[0].token == l.token
    g = list(oc.generate(model="smol", prompt="The sky is", logprobs=True, stream=True,
                         options={"temperature": 0, "num_predict": 5}))
    assert sum(len(p.logprobs or []) for p in g) == 5


def test_truncate_and_clamp(oc):
    long = [{"role": "user", "content": "tell me more " * 400}, {"role": "assistant", "content": "ok " * 600},
            {"role": "user", "content": "word " * 900}, {"role": "assistant", "content": "fine"},
            {"role": "user", "content": "What is the capital of France?"}]
    with pytest.raises(ollama.ResponseError, match="context") as e:
        oc.chat(model="smol", messages=long, options={"num_predict": 4, "truncate": False})
    assert e.value.status_code == 400
    # Ollama drops the oldest messages by default, as `truncate: true` asks.
    for options in ({"num_predict": 4, "temperature": 0}, {"num_predict": 4, "truncate": True, "temperature": 0}):
        r = oc.chat(model="smol", messages=long, options=options)
        # The oldest messages went: the prompt fits the 2048-token context now.
        assert r.done and 0 < r.prompt_eval_count < 2048
    # Ollama clamps an output limit past the context instead of refusing it.
    r = oc.generate(model="smol", prompt="Count to ten.", options={"num_predict": 100000, "num_ctx": 64,
                                                                    "temperature": 0})
    assert r.done_reason == "length" and r.prompt_eval_count + r.eval_count <= 64

"""Drives `blast mock` with the official `ollama` and `openai` Python clients, and checks
the raw JSON of every call against the field names and types the two APIs document.

    python scripts/mock_clients.py http://127.0.0.1:PORT

The mock must run with `--models llama3.2,qwen2.5:0.5b --tokens 5 --token-delay 2ms`
(scripts/test_mock_clients.sh starts it so). Prints one line per check and exits non-zero
if any failed.
"""

import base64
import json
import struct
import sys
import traceback

import httpx
import ollama
import openai

URL = sys.argv[1].rstrip("/")
MODEL = "llama3.2"
TOKENS = 5
RESULTS = {"passed": 0, "failed": 0}

# Field names and types, as documented: https://github.com/ollama/ollama/blob/main/docs/api.md
# and https://platform.openai.com/docs/api-reference. A type may be a tuple of types, a
# nested dict (an object), or a one-element list (an array of that).
INT, STR, BOOL, NUM = int, str, bool, (int, float)
NULL = type(None)
O_DETAILS = {"format": STR, "family": STR, "families": [STR], "parameter_size": STR,
             "quantization_level": STR}
O_CHUNK = {"model": STR, "created_at": STR, "done": BOOL}
O_FINAL = {**O_CHUNK, "done_reason": STR, "total_duration": INT, "load_duration": INT,
           "prompt_eval_count": INT, "prompt_eval_duration": INT, "eval_count": INT,
           "eval_duration": INT}
O_GEN_CHUNK = {**O_CHUNK, "response": STR}
O_GEN_FINAL = {**O_FINAL, "response": STR, "context": [INT]}
O_MESSAGE = {"role": STR, "content": STR}
O_CHAT_CHUNK = {**O_CHUNK, "message": O_MESSAGE}
O_CHAT_FINAL = {**O_FINAL, "message": O_MESSAGE}
O_TAGS = {"models": [{"name": STR, "model": STR, "modified_at": STR, "size": INT,
                      "digest": STR, "details": O_DETAILS}]}
O_PS = {"models": [{"name": STR, "model": STR, "size": INT, "digest": STR,
                    "details": O_DETAILS, "expires_at": STR, "size_vram": INT}]}
O_SHOW = {"modelfile": STR, "parameters": STR, "template": STR, "details": O_DETAILS,
          "model_info": dict, "capabilities": [STR], "modified_at": STR}
O_EMBED = {"model": STR, "embeddings": [[NUM]], "total_duration": INT, "load_duration": INT,
           "prompt_eval_count": INT}
O_EMBEDDINGS = {"embedding": [NUM]}
O_ERROR = {"error": STR}

A_USAGE = {"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT}
A_HEAD = {"id": STR, "object": STR, "created": INT, "model": STR}
A_CHAT = {**A_HEAD, "choices": [{"index": INT, "message": {"role": STR, "content": STR},
                                 "finish_reason": STR, "logprobs": NULL}], "usage": A_USAGE}
A_CHAT_CHUNK = {**A_HEAD, "choices": [{"index": INT, "delta": dict,
                                       "finish_reason": (STR, NULL)}]}
A_COMPLETION = {**A_HEAD, "choices": [{"index": INT, "text": STR, "finish_reason": STR,
                                       "logprobs": NULL}], "usage": A_USAGE}
A_COMPLETION_CHUNK = {**A_HEAD, "choices": [{"index": INT, "text": STR,
                                             "finish_reason": (STR, NULL)}]}
A_MODEL = {"id": STR, "object": STR, "created": INT, "owned_by": STR}
A_MODELS = {"object": STR, "data": [A_MODEL]}
A_EMBEDDINGS = {"object": STR, "model": STR,
                "data": [{"object": STR, "embedding": ([NUM], STR), "index": INT}],
                "usage": {"prompt_tokens": INT, "total_tokens": INT}}
A_ERROR = {"error": {"message": STR, "type": STR, "param": (STR, NULL), "code": (STR, NULL)}}


def conforms(value, schema, where="$"):
    """Raises AssertionError naming the first field that is missing or of the wrong type."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: want an object, got {value!r:.80}"
        for key, sub in schema.items():
            assert key in value, f"{where}: no field {key!r} in {sorted(value)}"
            conforms(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: want an array, got {value!r:.80}"
        for i, item in enumerate(value):
            conforms(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, tuple) and any(isinstance(s, (list, dict)) for s in schema):
        errors = []
        for s in schema:
            try:
                return conforms(value, s, where)
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(" / ".join(errors))
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        # JSON true is not a number.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        assert ok, f"{where}: want {schema}, got {value!r:.80}"


def check(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        RESULTS["failed"] += 1
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL: {name}: {detail}")
    else:
        RESULTS["passed"] += 1
        print(f"PASS: {name}")


raw = httpx.Client(base_url=URL, timeout=30)


def post(path, body):
    return raw.post(path, json=body)


def ndjson(path, body):
    r = post(path, body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in r.text.splitlines()]


def sse(path, body):
    r = post(path, body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-1]
    return [json.loads(e) for e in events[:-1]]


# --- Ollama -----------------------------------------------------------------------------
oc = ollama.Client(host=URL, timeout=30)


def o_health():
    r = raw.get("/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    r = raw.get("/health")
    assert r.status_code == 200
    conforms(raw.get("/api/version").json(), {"version": STR})


def o_tags():
    conforms(raw.get("/api/tags").json(), O_TAGS)
    names = [m.model for m in oc.list().models]
    assert names == ["llama3.2:latest", "qwen2.5:0.5b"], names


def o_ps():
    conforms(raw.get("/api/ps").json(), O_PS)
    ps = oc.ps()
    assert [m.name for m in ps.models] == ["llama3.2:latest", "qwen2.5:0.5b"]
    assert ps.models[0].expires_at is not None and ps.models[0].size_vram > 0


def o_show():
    conforms(post("/api/show", {"model": MODEL}).json(), O_SHOW)
    s = oc.show(MODEL)
    assert s.details.family == "llama" and isinstance(s.modelinfo, dict), s


def o_generate():
    r = post("/api/generate", {"model": MODEL, "prompt": "Why?", "stream": False}).json()
    conforms(r, O_GEN_FINAL)
    assert r["eval_count"] == TOKENS and len(r["context"]) > 0
    g = oc.generate(model=MODEL, prompt="Why?")
    assert g.done and g.eval_count == TOKENS and g.response and g.context, g


def o_generate_stream():
    lines = ndjson("/api/generate", {"model": MODEL, "prompt": "Why?"})
    for line in lines[:-1]:
        conforms(line, O_GEN_CHUNK)
        assert line["done"] is False
    conforms(lines[-1], O_GEN_FINAL)
    stamps = [line["created_at"] for line in lines]
    # Each chunk is stamped when it was produced (tokens are 2 ms apart).
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
    parts = list(oc.generate(model=MODEL, prompt="Why?", stream=True))
    assert len(parts) == TOKENS + 1 and parts[-1].done and parts[-1].context
    assert "".join(p.response for p in parts) == "The quick brown fox jumps "


def o_chat():
    msgs = [{"role": "user", "content": "hi"}]
    conforms(post("/api/chat", {"model": MODEL, "messages": msgs, "stream": False}).json(),
             O_CHAT_FINAL)
    lines = ndjson("/api/chat", {"model": MODEL, "messages": msgs})
    for line in lines[:-1]:
        conforms(line, O_CHAT_CHUNK)
    conforms(lines[-1], O_CHAT_FINAL)
    c = oc.chat(model=MODEL, messages=msgs)
    assert c.message.role == "assistant" and c.message.content and c.done
    parts = list(oc.chat(model=MODEL, messages=msgs, stream=True))
    assert len(parts) == TOKENS + 1 and parts[-1].done_reason == "stop"


def o_embed():
    r = post("/api/embed", {"model": MODEL, "input": ["a", "b"]}).json()
    conforms(r, O_EMBED)
    e = oc.embed(model=MODEL, input=["a", "b"])
    assert len(e.embeddings) == 2 and e.embeddings[0] != e.embeddings[1]
    assert e.embeddings == r["embeddings"], "deterministic"
    one = oc.embed(model=MODEL, input="a")
    assert one.embeddings[0] == e.embeddings[0]
    conforms(post("/api/embeddings", {"model": MODEL, "prompt": "a"}).json(), O_EMBEDDINGS)
    old = oc.embeddings(model=MODEL, prompt="a")
    assert list(old.embedding) == e.embeddings[0]


def o_errors():
    r = post("/api/generate", {"model": "nope", "prompt": "x"})
    assert r.status_code == 404
    conforms(r.json(), O_ERROR)
    assert r.json()["error"] == 'model "nope" not found, try pulling it first', r.text
    try:
        oc.chat(model="nope", messages=[])
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        assert e.status_code == 404 and "try pulling it first" in e.error, e
    try:
        oc.show("nope")
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        assert e.status_code == 404 and e.error == "model 'nope' not found", e


# --- OpenAI -----------------------------------------------------------------------------
ac = openai.OpenAI(base_url=f"{URL}/v1", api_key="mock", max_retries=0, timeout=30)
# Llama Stack's older paths.
ac_alias = openai.OpenAI(base_url=f"{URL}/v1/openai/v1", api_key="mock", max_retries=0,
                         timeout=30)


def a_models():
    conforms(raw.get("/v1/models").json(), A_MODELS)
    assert [m.id for m in ac.models.list()] == ["llama3.2:latest", "qwen2.5:0.5b"]
    conforms(raw.get("/v1/models/qwen2.5:0.5b").json(), A_MODEL)
    m = ac.models.retrieve("qwen2.5:0.5b")
    assert (m.id, m.object) == ("qwen2.5:0.5b", "model"), m
    assert ac_alias.models.retrieve(MODEL).id == MODEL


def a_chat():
    msgs = [{"role": "user", "content": "hi"}]
    r = post("/v1/chat/completions", {"model": MODEL, "messages": msgs}).json()
    conforms(r, A_CHAT)
    assert r["object"] == "chat.completion"
    c = ac.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3)
    assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 3
    assert ac_alias.chat.completions.create(model=MODEL, messages=msgs).choices[0].message.content


def a_chat_stream():
    msgs = [{"role": "user", "content": "hi"}]
    body = {"model": MODEL, "messages": msgs, "stream": True,
            "stream_options": {"include_usage": True}}
    chunks = sse("/v1/chat/completions", body)
    for ch in chunks[:-1]:
        conforms(ch, A_CHAT_CHUNK)
        assert ch["object"] == "chat.completion.chunk"
        # With include_usage, every chunk but the last carries "usage": null.
        assert "usage" in ch and ch["usage"] is None, ch
    last = chunks[-1]
    conforms(last, {**A_HEAD, "choices": [], "usage": A_USAGE})
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == TOKENS
    plain = sse("/v1/chat/completions", {"model": MODEL, "messages": msgs, "stream": True})
    assert all("usage" not in ch for ch in plain)
    stream = ac.chat.completions.create(model=MODEL, messages=msgs, stream=True,
                                        stream_options={"include_usage": True})
    parts = list(stream)
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert text == "The quick brown fox jumps ", text
    assert parts[-1].usage.completion_tokens == TOKENS


def a_completions():
    r = post("/v1/completions", {"model": MODEL, "prompt": "x"}).json()
    conforms(r, A_COMPLETION)
    assert r["object"] == "text_completion"
    for ch in sse("/v1/completions", {"model": MODEL, "prompt": "x", "stream": True}):
        conforms(ch, A_COMPLETION_CHUNK)
    c = ac.completions.create(model=MODEL, prompt="x")
    assert c.choices[0].text and c.usage.total_tokens > TOKENS
    parts = list(ac.completions.create(model=MODEL, prompt="x", stream=True))
    assert parts[-1].choices[0].finish_reason == "stop"


def a_embeddings():
    r = post("/v1/embeddings", {"model": MODEL, "input": ["a", "b"]}).json()
    conforms(r, A_EMBEDDINGS)
    assert r["object"] == "list" and r["data"][1]["index"] == 1
    floats = r["data"][0]["embedding"]
    b64 = post("/v1/embeddings", {"model": MODEL, "input": "a",
                                  "encoding_format": "base64"}).json()
    raw_bytes = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes)
    assert [round(x, 6) for x in decoded] == [round(x, 6) for x in floats]
    # The client asks for base64 unless told otherwise, and decodes it.
    e = ac.embeddings.create(model=MODEL, input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == len(floats)
    assert [round(x, 6) for x in e.data[0].embedding] == [round(x, 6) for x in floats]
    f = ac.embeddings.create(model=MODEL, input="a", encoding_format="float", dimensions=8)
    assert len(f.data[0].embedding) == 8 and f.usage.prompt_tokens >= 1
    assert len(ac_alias.embeddings.create(model=MODEL, input="a").data) == 1


def a_errors():
    for path, body in [("/v1/chat/completions", {"model": "nope", "messages": []}),
                       ("/v1/embeddings", {"model": "nope", "input": "x"}),
                       ("/v1/chat/completions", {"messages": []})]:
        r = post(path, body)
        assert r.status_code in (400, 404), r.status_code
        conforms(r.json(), A_ERROR)
    r = raw.get("/v1/models/nope")
    assert r.status_code == 404
    conforms(r.json(), A_ERROR)
    try:
        ac.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("no error")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and "try pulling it first" in e.message, e
        assert e.body["type"] == "not_found_error", e.body
    try:
        ac.chat.completions.create(model="", messages=[])
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        assert e.body["message"] == "model is required", e.body


for name, fn in [("ollama: / /health /api/version", o_health), ("ollama: /api/tags", o_tags),
                 ("ollama: /api/ps", o_ps), ("ollama: /api/show", o_show),
                 ("ollama: /api/generate", o_generate),
                 ("ollama: /api/generate stream", o_generate_stream),
                 ("ollama: /api/chat, streamed and not", o_chat),
                 ("ollama: /api/embed /api/embeddings", o_embed),
                 ("ollama: errors", o_errors),
                 ("openai: /v1/models, /v1/models/{id}", a_models),
                 ("openai: /v1/chat/completions", a_chat),
                 ("openai: /v1/chat/completions stream + usage", a_chat_stream),
                 ("openai: /v1/completions, streamed and not", a_completions),
                 ("openai: /v1/embeddings float and base64", a_embeddings),
                 ("openai: errors", a_errors)]:
    check(name, fn)

print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
sys.exit(1 if RESULTS["failed"] else 0)

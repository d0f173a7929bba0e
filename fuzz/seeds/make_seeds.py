#!/usr/bin/env python3
"""Writes the hand-made starting inputs into fuzz/corpus/<target>/ (seed-*). Each input is
[mode, n, n read lengths, payload]; see fuzz/src/props.rs."""
import hashlib, os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def put(target, mode, lens, payload):
    data = bytes([mode, len(lens)]) + bytes(lens) + payload
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
PARSER = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world" + NEXT,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b;c\"\r\nhello\r\n0\r\nT: x\r\n\r\n" + NEXT,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1 ;x\r\n!\n0\n\n" + NEXT,
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n" + NEXT,
    b"\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + NEXT,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"HTTP/1.1 200\nContent-Length: 1\n\nz",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
]
for i, p in enumerate(PARSER):
    put("response_parser", 0, [], p)
    put("response_parser", 0b10 if i % 2 else 0b01, [7, 1, 0, 30], p)

OLLAMA_GEN = (b'{"model":"llama3.2","response":"The","done":false}\n'
              b'{"model":"llama3.2","response":"","done":false}\n'
              b'{"model":"llama3.2","response":"caf\\u00e9 \\"x\\"","done":false}\n'
              b'{"model":"llama3.2","response":"","done":true,"done_reason":"stop","context":[1,2,3],'
              b'"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,'
              b'"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}\n')
OLLAMA_CHAT = (b'{"message":{"role":"assistant","content":"Hello"},"done":false}\r\n\r\n'
               b'{"message":{"role":"assistant","thinking":"hm"},"done":false}\r\n  \n'
               b'{"error":"boom"}\n'
               b'{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","eval_count":2}')
OPENAI_CHAT = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\n\n'
               b'data: {"choices":[{"index":0,"delta":{"content":"Hello","reasoning_content":"r"},"finish_reason":null}]}\n\n'
               b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}\n\n'
               b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2}}\n\n'
               b'data: [DONE]\n\n')
OPENAI_COMPL = (b': keep-alive\n\nevent: message\nid: 1\nretry: 1000\n'
                b'data: {"choices":[{"index":0,"text":"one","finish_reason":null}]}\n\n'
                b':comment\r\ndata:{"choices":[{"index":0,"text":"two","finish_reason":null}]}\r\n\r\n'
                b'data:\ndata\n\ndata: {"error":{"message":"x"}}\n\n'
                b'data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
                b'data: [DON')
NON_STREAM_OLLAMA = b'{"response":"The sky","done":true,"eval_count":2}'
NON_STREAM_OPENAI = b'{"choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"completion_tokens":1}}'
for target, body, whole in [
    ("stream_ollama_generate", OLLAMA_GEN, NON_STREAM_OLLAMA),
    ("stream_ollama_chat", OLLAMA_CHAT, NON_STREAM_OLLAMA),
    ("stream_openai_chat", OPENAI_CHAT, NON_STREAM_OPENAI),
    ("stream_openai_completions", OPENAI_COMPL, NON_STREAM_OPENAI),
]:
    put(target, 0, [], body)
    put(target, 0, [5, 0, 64], body)
    put(target, 2 | (16 << 2), [9], body)  # small event limit: 64 bytes
    put(target, 1, [3], whole)             # not streaming

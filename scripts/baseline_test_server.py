#!/usr/bin/env python3
"""Tiny HTTP/1.1 keep-alive test server for async_baseline.py (stdlib asyncio only).

Listens on 127.0.0.1 (port 0 = any free port) and prints the port on stdout.

  GET  /count                 {"requests": N, "connections": C}: requests served so far
                              (not counting /count) and connections accepted
  POST /api/generate          Ollama generate: NDJSON stream (chunked) when "stream" is true
  POST /api/chat              Ollama chat: same, with message.content
  POST /v1/chat/completions   OpenAI chat: SSE stream (chunked) when "stream" is true
  POST /v1/completions        OpenAI completions: same, with choices[0].text
  anything else               200 "ok" with Content-Length

Non-streaming LLM replies carry the server's token count (eval_count /
usage.completion_tokens). Every streamed reply has --tokens content events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

LLM_PATHS = ("/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions")


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.count = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                close = (headers.get("connection", "").lower() == "close"
                         or version == "HTTP/1.0")
                path = target.split("?", 1)[0]

                if path == "/count":
                    await self.respond(writer, json.dumps({"requests": self.count,
                                                                  "connections": self.connections}).encode(),
                                       "application/json", close)
                else:
                    self.count += 1
                    if self.args.delay_ms:
                        await asyncio.sleep(self.args.delay_ms / 1000)
                    if method == "POST" and path in LLM_PATHS:
                        await self.llm(writer, path, body, close)
                    else:
                        await self.respond(writer, b"ok", "text/plain", close)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def respond(self, writer, body: bytes, ctype: str, close: bool) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + (b"\r\nConnection: close" if close else b"")
            + b"\r\n\r\n" + body)
        await writer.drain()

    async def llm(self, writer, path: str, body: bytes, close: bool) -> None:
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        n = self.args.tokens
        words = [f"tok{i} " for i in range(n)]
        ollama = path.startswith("/api/")
        if not req.get("stream"):
            text = "".join(words)
            if path == "/api/generate":
                doc = {"response": text, "done": True, "eval_count": n}
            elif path == "/api/chat":
                doc = {"message": {"role": "assistant", "content": text}, "done": True,
                       "eval_count": n}
            elif path == "/v1/chat/completions":
                doc = {"choices": [{"message": {"role": "assistant", "content": text}}],
                       "usage": {"completion_tokens": n}}
            else:
                doc = {"choices": [{"text": text}], "usage": {"completion_tokens": n}}
            await self.respond(writer, json.dumps(doc).encode(), "application/json", close)
            return

        ctype = "application/x-ndjson" if ollama else "text/event-stream"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode()
                     + b"\r\nTransfer-Encoding: chunked"
                     + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n")
        events = []
        for w in words:
            if path == "/api/generate":
                events.append({"response": w, "done": False})
            elif path == "/api/chat":
                events.append({"message": {"role": "assistant", "content": w}, "done": False})
            elif path == "/v1/chat/completions":
                events.append({"choices": [{"delta": {"content": w}}]})
            else:
                events.append({"choices": [{"text": w}]})
        # Closing events carry no content and must not count as tokens.
        if path == "/api/generate":
            events.append({"response": "", "done": True, "eval_count": n})
        elif path == "/api/chat":
            events.append({"message": {"role": "assistant", "content": ""}, "done": True})
        elif path == "/v1/chat/completions":
            events.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        for i, ev in enumerate(events):
            data = json.dumps(ev)
            chunk = (data + "\n") if ollama else f"data: {data}\n\n"
            if not ollama and i == len(events) - 1:
                chunk += "data: [DONE]\n\n"
            raw = chunk.encode()
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            await writer.drain()
            if self.args.token_delay_ms:
                await asyncio.sleep(self.args.token_delay_ms / 1000)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay before each reply")
    p.add_argument("--tokens", type=int, default=5, help="content events per LLM reply")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between events")
    args = p.parse_args()
    srv = Server(args)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", args.port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

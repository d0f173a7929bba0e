#!/usr/bin/env python3
"""async_baseline.py: the asyncio/aiohttp load tester that blast is compared against.

It re-creates the Python load tester blast's users had before
("high_performance_load_tester.py"): one asyncio event loop, one aiohttp
ClientSession, an asyncio.Semaphore that caps concurrency, and a pool of
worker coroutines fed through an asyncio.Queue by a producer that paces
requests by load pattern (constant / burst / ramp / spike / chaos), with live
statistics once a second.

It is meant to be a fair baseline: written the way such a tool is normally
written, neither crippled nor tuned beyond that. In particular it keeps every
latency in a Python list and sorts it at the end, uses plain asyncio unless
--uvloop is given, and builds each LLM request body with aiohttp's json=.

The result JSON uses the same keys as blast's own report where they apply:
tool, elapsed_s, rps, requests{sent,completed,ok,failed}, status, errors,
latency_us, ttft_us, tokens, client_cpu_us_per_request, config.

Counting rules (the same as blast's):
  sent      requests the client started
  completed a whole response was received (any status)
  ok        completed with a 2xx status
  failed    ended in an error without a whole response (sent = completed + failed)

Example:
  python3 scripts/async_baseline.py http://127.0.0.1:8080/ --requests 500 --concurrent 50
  python3 scripts/async_baseline.py http://127.0.0.1:11434 --api ollama-generate --stream \\
      --rps 20 --pattern ramp --duration 60 --prompts short,medium --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import signal
import sys
import time
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import aiohttp

TOOL_NAME = "async-baseline"

PATTERNS = ("constant", "burst", "ramp", "spike", "chaos")

# API name -> (default path appended when the URL has no path, response format).
APIS = {
    "none": (None, None),
    "ollama-generate": ("/api/generate", "ndjson"),
    "ollama-chat": ("/api/chat", "ndjson"),
    "openai-chat": ("/v1/chat/completions", "sse"),
    "openai-completions": ("/v1/completions", "sse"),
}

ERROR_KINDS = ("connect", "timeout", "read", "write", "parse", "closed", "other")

# A few built-in prompts per set, like the original tool's three prompt types.
PROMPTS = {
    "short": [
        "Say hello.",
        "What is 2 + 2?",
        "Name a primary colour.",
        "Give me one word that rhymes with cat.",
    ],
    "medium": [
        "Explain in a short paragraph how a hash map handles collisions.",
        "Describe the difference between TCP and UDP in three or four sentences.",
        "Write a haiku about load testing and then explain its imagery briefly.",
        "Summarise what an HTTP keep-alive connection is and why it matters for throughput.",
    ],
    "long": [
        "Write a detailed essay on the history of distributed systems, covering early "
        "time-sharing machines, the rise of networked computing, the CAP theorem, "
        "consensus protocols such as Paxos and Raft, and how modern cloud providers "
        "build highly available services. Give concrete examples for each era and "
        "finish with a discussion of open problems.",
        "You are reviewing a web service that slows down under load. Walk through a "
        "complete investigation: which metrics to collect, how to tell queueing delay "
        "from service time, how to use percentiles instead of averages, how coordinated "
        "omission distorts measurements, and which fixes you would try first and why. "
        "Be thorough and structured.",
        "Explain, step by step and with examples, how a large language model turns a "
        "prompt into generated text: tokenisation, embeddings, attention, the KV cache, "
        "sampling strategies such as temperature and top-p, and why time to first token "
        "differs from the rate of later tokens.",
    ],
}

# Shape constants of the paced patterns (see schedule()).
RAMP_FLOOR = 0.05      # ramp starts at 5% of --rps
SPIKE_PERIOD_S = 10.0  # spike: every 10 s ...
SPIKE_LEN_S = 2.0      # ... the last 2 s run ...
SPIKE_FACTOR = 5.0     # ... at 5x --rps
CHAOS_MIN, CHAOS_MAX = 0.1, 2.0  # chaos: each second's rate is uniform in [0.1, 2] x --rps
CHAOS_BURST_P = 0.1    # chaos: chance per second of an extra burst of 1..--burst-size


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="async_baseline.py",
        description="asyncio + aiohttp HTTP load tester (the baseline blast is compared with).",
    )
    p.add_argument("url", help="target URL (http://host:port/path)")
    p.add_argument("-c", "--concurrent", type=positive_int, default=10,
                   help="workers, semaphore size and connection limit (default 10)")
    p.add_argument("-n", "--requests", type=positive_int, default=None,
                   help="send exactly N requests (default 100 when --duration is not given)")
    p.add_argument("-d", "--duration", type=positive_float, default=None,
                   help="run for S seconds (float); with --requests, whichever ends first")
    p.add_argument("--rps", type=positive_float, default=None,
                   help="target request rate; without it the test is closed-loop "
                        "(each worker sends back to back)")
    p.add_argument("--pattern", choices=PATTERNS, default="constant",
                   help="pacing pattern when --rps is given (default constant)")
    p.add_argument("--burst-size", type=positive_int, default=10,
                   help="requests per burst for burst/chaos (default 10)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for chaos pacing and prompt choice")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="total timeout per request in seconds (default 30)")
    p.add_argument("-X", "--method", default=None,
                   help="HTTP method (default GET, or POST with --body/--api)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'",
                   help="extra request header (repeatable)")
    p.add_argument("--body", default=None,
                   help="request body string (overrides the body --api would build)")
    p.add_argument("--api", choices=tuple(APIS), default="none",
                   help="LLM API to speak (default none: plain HTTP)")
    p.add_argument("--model", default="llama3.2", help="model name for --api (default llama3.2)")
    p.add_argument("--prompts", nargs="+", default=["short"], metavar="SET",
                   help="prompt sets: short,medium,long (comma- or space-separated)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=False,
                   help="ask the LLM API to stream; records time to first token and tokens")
    p.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                   help="write the result JSON to PATH ('-' = stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live stats line")
    p.add_argument("--uvloop", action="store_true",
                   help="run on uvloop instead of the default asyncio loop")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)

    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"URL must be http://host[:port][/path], got {args.url!r}")
    try:
        parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        parser.error(f"bad URL {args.url!r}: {exc}")
    default_path = APIS[args.api][0]
    if default_path and parts.path in ("", "/"):
        # `--api ollama-generate http://host:11434` means the API's usual endpoint.
        parts = parts._replace(path=default_path)
    args.target = urlunsplit(parts)

    headers: list[tuple[str, str]] = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or name != name.strip():
            parser.error(f"bad --header {raw!r}: expected 'Name: value'")
        headers.append((name, value.strip()))
    args.headers = headers

    sets: list[str] = []
    for item in args.prompts:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in PROMPTS:
                parser.error(f"unknown prompt set {name!r} (choose from short, medium, long)")
            if name not in sets:
                sets.append(name)
    if not sets:
        parser.error("--prompts needs at least one set")
    args.prompt_sets = sets

    if args.requests is None and args.duration is None:
        args.requests = 100
    if args.method is None:
        args.method = "POST" if (args.body is not None or args.api != "none") else "GET"
    args.method = args.method.upper()
    return args


# --------------------------------------------------------------------------- #
# Pacing
# --------------------------------------------------------------------------- #

def schedule(pattern: str, rps: float, burst_size: int, rng: random.Random,
             nominal_s: float):
    """Yield (offset_s, count): release `count` requests `offset_s` after the start.

    The average rate is --rps for constant, burst and chaos (in expectation);
    ramp climbs linearly from RAMP_FLOOR*rps to rps over `nominal_s` (the run's
    length, --duration or --requests/--rps) and then holds; spike runs at rps
    with SPIKE_FACTOR*rps for the last SPIKE_LEN_S of every SPIKE_PERIOD_S.
    Offsets are absolute, so a late wake-up does not shift the rest of the run.
    """
    t = 0.0
    if pattern == "constant":
        i = 0
        while True:
            yield i / rps, 1
            i += 1
    elif pattern == "burst":
        period = burst_size / rps
        i = 0
        while True:
            yield i * period, burst_size
            i += 1
    elif pattern == "ramp":
        while True:
            yield t, 1
            frac = min(1.0, max(RAMP_FLOOR, t / nominal_s if nominal_s > 0 else 1.0))
            t += 1.0 / (rps * frac)
    elif pattern == "spike":
        while True:
            yield t, 1
            in_spike = (t % SPIKE_PERIOD_S) >= SPIKE_PERIOD_S - SPIKE_LEN_S
            t += 1.0 / (rps * (SPIKE_FACTOR if in_spike else 1.0))
    elif pattern == "chaos":
        second = 0
        while True:
            # A new random rate every second, Poisson arrivals within it, and
            # now and then an extra burst at the start of the second.
            rate = rps * rng.uniform(CHAOS_MIN, CHAOS_MAX)
            if rng.random() < CHAOS_BURST_P:
                yield float(second), rng.randint(1, burst_size)
            t = float(second) + rng.expovariate(rate)
            while t < second + 1:
                yield t, 1
                t += rng.expovariate(rate)
            second += 1
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(pattern)


# --------------------------------------------------------------------------- #
# Statistics
# --------------------------------------------------------------------------- #

def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: list[int]) -> dict:
    keys = ("min", "mean", "p50", "p90", "p99", "p999", "max")
    if not values:
        return {k: None for k in keys}
    s = sorted(values)
    return {
        "min": s[0],
        "mean": int(round(sum(s) / len(s))),
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "p999": percentile(s, 99.9),
        "max": s[-1],
    }


def classify(exc: BaseException) -> str:
    """Map an exception from a request to one of blast's error kinds.

    Order matters: aiohttp's timeout errors are also ServerConnectionErrors,
    and ClientConnectorError is a ClientOSError.
    """
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "read"
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised (with raise_for_status off) only when the response head could
        # not be parsed.
        return "parse"
    if isinstance(exc, aiohttp.ClientOSError):
        # aiohttp says "Can not write request body" when sending fails; any
        # other OS error on an open connection happened while waiting/reading.
        return "write" if "write" in str(exc).lower() else "read"
    return "other"


class Progress:
    """LLM output of one request, added to Stats when the request ends."""

    __slots__ = ("ttft_us", "tokens")

    def __init__(self) -> None:
        self.ttft_us: int | None = None
        self.tokens = 0


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.completed = 0
        self.ok = 0
        self.failed = 0
        self.status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter({k: 0 for k in ERROR_KINDS})
        self.latencies_us: list[int] = []
        self.ttft_us: list[int] = []
        self.tokens = 0
        self.window_us: list[int] = []  # latencies since the last live line

    def record_response(self, status: int, latency_us: int) -> None:
        self.completed += 1
        if 200 <= status < 300:
            self.ok += 1
        self.status[status] += 1
        self.latencies_us.append(latency_us)
        self.window_us.append(latency_us)

    def record_error(self, kind: str) -> None:
        self.failed += 1
        self.errors[kind] += 1

    def record_tokens(self, progress: Progress) -> None:
        if progress.ttft_us is not None:
            self.ttft_us.append(progress.ttft_us)
        self.tokens += progress.tokens


# --------------------------------------------------------------------------- #
# The load tester
# --------------------------------------------------------------------------- #

class LoadTester:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.rng = random.Random(args.seed)
        self.api_format = APIS[args.api][1]
        self.llm = args.api != "none"
        self.prompts = [p for name in args.prompt_sets for p in PROMPTS[name]]
        self.headers = dict(args.headers)
        self.raw_body = args.body.encode() if args.body is not None else None
        self.deadline: float | None = None
        self.started = 0.0
        self.ended: float | None = None
        self.interrupted = False
        self.semaphore = asyncio.Semaphore(args.concurrent)
        # Closed loop: a small bounded queue keeps the producer just ahead of
        # the workers. Paced: unbounded, so the producer keeps its schedule
        # even when the workers fall behind (the backlog waits in the queue).
        maxsize = args.concurrent * 2 if args.rps is None else 0
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)

    # ---- request bodies ---------------------------------------------------

    def payload(self, prompt: str) -> dict | None:
        a = self.args
        if a.api == "ollama-generate":
            return {"model": a.model, "prompt": prompt, "stream": a.stream}
        if a.api == "ollama-chat":
            return {"model": a.model, "messages": [{"role": "user", "content": prompt}],
                    "stream": a.stream}
        if a.api == "openai-chat":
            return {"model": a.model, "messages": [{"role": "user", "content": prompt}],
                    "stream": a.stream}
        if a.api == "openai-completions":
            return {"model": a.model, "prompt": prompt, "stream": a.stream}
        return None

    # ---- producer ---------------------------------------------------------

    def _expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def producer(self) -> None:
        a = self.args
        remaining = a.requests  # None = until the deadline
        n_prompts = len(self.prompts)
        if a.rps is None:
            # Closed loop: hand out work as fast as the workers take it.
            while remaining is None or remaining > 0:
                if self._expired():
                    break
                await self.queue.put(self.rng.randrange(n_prompts))
                if remaining is not None:
                    remaining -= 1
        else:
            nominal = a.duration if a.duration is not None else a.requests / a.rps
            for offset, count in schedule(a.pattern, a.rps, a.burst_size, self.rng, nominal):
                at = self.started + offset
                if self.deadline is not None and at >= self.deadline:
                    # Nothing more is due before the deadline: the run still
                    # lasts its full duration (this matters for sparse patterns).
                    await asyncio.sleep(max(0.0, self.deadline - time.monotonic()))
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if remaining is not None:
                    count = min(count, remaining)
                for _ in range(count):
                    self.queue.put_nowait(self.rng.randrange(n_prompts))
                if remaining is not None:
                    remaining -= count
                    if remaining == 0:
                        break
        # One stop marker per worker.
        for _ in range(a.concurrent):
            await self.queue.put(None)

    # ---- workers ----------------------------------------------------------

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while True:
            item = await self.queue.get()
            if item is None or self._expired():
                return
            async with self.semaphore:
                await self.one_request(session, self.prompts[item])

    async def one_request(self, session: aiohttp.ClientSession, prompt: str) -> None:
        stats = self.stats
        stats.sent += 1
        kwargs: dict = {"headers": self.headers}
        if self.raw_body is not None:
            kwargs["data"] = self.raw_body
        elif self.llm:
            kwargs["json"] = self.payload(prompt)
        progress = Progress()
        start = time.perf_counter()
        try:
            async with session.request(self.args.method, self.args.target, **kwargs) as resp:
                if self.llm and self.args.stream:
                    await self.read_stream(resp, start, progress)
                else:
                    body = await resp.read()
                    if self.llm and 200 <= resp.status < 300:
                        progress.tokens = self.usage_tokens(body)
                status = resp.status
        except asyncio.CancelledError:
            # Interrupted mid-request (Ctrl-C): it never finished, so it is
            # left out of every count (sent = completed + failed still holds).
            stats.sent -= 1
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
            stats.record_error(classify(exc))
            # Tokens that arrived before a stream broke were still received.
            stats.record_tokens(progress)
            return
        latency_us = int((time.perf_counter() - start) * 1_000_000)
        stats.record_response(status, latency_us)
        stats.record_tokens(progress)

    # ---- LLM responses ----------------------------------------------------

    def usage_tokens(self, body: bytes) -> int:
        """Non-streaming LLM reply: the server's own output token count."""
        try:
            doc = json.loads(body)
        except ValueError:
            return 0
        if not isinstance(doc, dict):
            return 0
        if self.api_format == "ndjson":
            n = doc.get("eval_count")
        else:
            n = (doc.get("usage") or {}).get("completion_tokens")
        return n if isinstance(n, int) and n >= 0 else 0

    def content_of(self, event: dict) -> str | None:
        """Text carried by one streamed event, for the current API."""
        api = self.args.api
        if api == "ollama-generate":
            return event.get("response")
        if api == "ollama-chat":
            return (event.get("message") or {}).get("content")
        choices = event.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return None
        if api == "openai-chat":
            return (choices[0].get("delta") or {}).get("content")
        return choices[0].get("text")  # openai-completions

    async def read_stream(self, resp: aiohttp.ClientResponse, start: float,
                          progress: Progress) -> None:
        """Read a streamed reply line by line (NDJSON) or event by event (SSE).

        Every event with non-empty content counts as one token; the first one
        sets the time to first token. Error statuses are read and not parsed.
        """
        parse = 200 <= resp.status < 300
        sse_data: list[str] = []

        def handle(text: str) -> None:
            if not parse or not text or text == "[DONE]":
                return
            try:
                event = json.loads(text)
            except ValueError:
                return
            if not isinstance(event, dict):
                return
            content = self.content_of(event)
            if content:
                if progress.ttft_us is None:
                    progress.ttft_us = int((time.perf_counter() - start) * 1_000_000)
                progress.tokens += 1

        async for raw in resp.content:  # yields one line at a time
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if self.api_format == "ndjson":
                handle(line.strip())
            elif line == "":
                # A blank line ends an SSE event.
                if sse_data:
                    handle("\n".join(sse_data))
                    sse_data = []
            elif line.startswith("data:"):
                value = line[5:]
                sse_data.append(value[1:] if value.startswith(" ") else value)
            # Other SSE fields (event:, id:, retry:, comments) carry no tokens.
        if sse_data:
            handle("\n".join(sse_data))

    # ---- live statistics --------------------------------------------------

    async def reporter(self) -> None:
        tty = sys.stderr.isatty()
        last_done = 0
        last_t = self.started
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            s = self.stats
            done = s.completed + s.failed
            window, s.window_us = s.window_us, []
            rate_now = (done - last_done) / max(now - last_t, 1e-9)
            last_done, last_t = done, now
            line = (f"[{now - self.started:6.1f}s] sent {s.sent} ok {s.ok} "
                    f"failed {s.failed} in-flight {s.sent - done} "
                    f"rps {rate_now:.1f}")
            if window:
                # Percentiles of the last second only: sorting the whole list
                # every second would grow without bound.
                window.sort()
                line += (f" p50 {percentile(window, 50) / 1000:.2f}ms"
                         f" p99 {percentile(window, 99) / 1000:.2f}ms")
            if self.llm and s.tokens:
                line += f" tokens {s.tokens}"
            sys.stderr.write(("\r\033[K" + line) if tty else (line + "\n"))
            sys.stderr.flush()

    # ---- the run ----------------------------------------------------------

    async def run(self) -> None:
        a = self.args
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()

        def on_signal() -> None:
            # First Ctrl-C: stop and report. A second one kills as usual.
            self.interrupted = True
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            main_task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

        connector = aiohttp.TCPConnector(limit=a.concurrent)
        timeout = aiohttp.ClientTimeout(total=a.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.started = time.monotonic()
            if a.duration is not None:
                self.deadline = self.started + a.duration
            tasks = [asyncio.create_task(self.worker(session)) for _ in range(a.concurrent)]
            producer = asyncio.create_task(self.producer())
            reporter = None if a.quiet else asyncio.create_task(self.reporter())
            try:
                # Workers end on their stop marker or at the deadline; requests
                # already in flight at the deadline are allowed to finish.
                await asyncio.gather(*tasks)
            except asyncio.CancelledError:
                if not self.interrupted:
                    raise
            finally:
                self.ended = time.monotonic()
                for t in (*tasks, producer, reporter):
                    if t is not None:
                        t.cancel()
                await asyncio.gather(*(t for t in (*tasks, producer, reporter) if t),
                                     return_exceptions=True)
                if reporter is not None and sys.stderr.isatty():
                    sys.stderr.write("\n")

    # ---- results ----------------------------------------------------------

    def result(self, cpu_s: float) -> dict:
        a = self.args
        s = self.stats
        elapsed = max((self.ended or time.monotonic()) - self.started, 1e-9)
        out: dict = {
            "tool": TOOL_NAME,
            "elapsed_s": round(elapsed, 6),
            "rps": round(s.completed / elapsed, 3),
            "requests": {"sent": s.sent, "completed": s.completed, "ok": s.ok,
                         "failed": s.failed},
            "status": {str(code): n for code, n in sorted(s.status.items())},
            "errors": {k: s.errors[k] for k in ERROR_KINDS},
            "latency_us": summarize(s.latencies_us),
        }
        if self.llm and a.stream:
            out["ttft_us"] = summarize(s.ttft_us)
        if self.llm:
            out["tokens"] = {"output": s.tokens, "per_s": round(s.tokens / elapsed, 3),
                             "source": "events" if a.stream else "usage"}
        out["client_cpu_us_per_request"] = (
            round(cpu_s / s.completed * 1_000_000, 3) if s.completed else None)
        out["config"] = {
            "url": a.target,
            "method": a.method,
            "concurrent": a.concurrent,
            "requests": a.requests,
            "duration_s": a.duration,
            "rps": a.rps,
            "pattern": a.pattern if a.rps is not None else "closed-loop",
            "burst_size": a.burst_size,
            "seed": a.seed,
            "timeout_s": a.timeout,
            "headers": [f"{n}: {v}" for n, v in a.headers],
            "body": a.body,
            "api": a.api,
            "model": a.model if self.llm else None,
            "prompts": a.prompt_sets,
            "stream": a.stream,
            "uvloop": a.uvloop,
            "interrupted": self.interrupted,
        }
        return out


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def human_summary(r: dict) -> str:
    req, lat = r["requests"], r["latency_us"]

    def ms(v):
        return "-" if v is None else f"{v / 1000:.2f}ms"

    lines = [
        f"{r['tool']}: {req['sent']} sent, {req['completed']} completed, {req['ok']} ok, "
        f"{req['failed']} failed in {r['elapsed_s']:.2f}s ({r['rps']:.1f} req/s)"
        + (" [interrupted]" if r["config"]["interrupted"] else ""),
        f"latency: min {ms(lat['min'])} mean {ms(lat['mean'])} p50 {ms(lat['p50'])} "
        f"p90 {ms(lat['p90'])} p99 {ms(lat['p99'])} p99.9 {ms(lat['p999'])} max {ms(lat['max'])}",
    ]
    if r["status"]:
        lines.append("status: " + ", ".join(f"{k}={v}" for k, v in r["status"].items()))
    errs = {k: v for k, v in r["errors"].items() if v}
    if errs:
        lines.append("errors: " + ", ".join(f"{k}={v}" for k, v in errs.items()))
    if "ttft_us" in r:
        t = r["ttft_us"]
        lines.append(f"ttft: p50 {ms(t['p50'])} p90 {ms(t['p90'])} p99 {ms(t['p99'])}")
    if "tokens" in r:
        tk = r["tokens"]
        lines.append(f"tokens: {tk['output']} ({tk['per_s']:.1f}/s, from {tk['source']})")
    cpu = r["client_cpu_us_per_request"]
    if cpu is not None:
        lines.append(f"client cpu: {cpu:.1f} us/request")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def go() -> tuple[LoadTester, float]:
        # The tester (its Semaphore and Queue) is created on the running loop.
        tester = LoadTester(args)
        cpu0 = cpu_seconds()
        try:
            await tester.run()
        except asyncio.CancelledError:
            if not tester.interrupted:
                raise
        # CPU of the load phase only: interpreter start-up and imports are
        # not part of the per-request cost.
        return tester, cpu_seconds() - cpu0

    if args.uvloop:
        import uvloop
        loop_factory = uvloop.new_event_loop
    else:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        tester, cpu_s = runner.run(go())

    result = tester.result(cpu_s)
    text = json.dumps(result, indent=2)
    if args.json_path == "-":
        sys.stdout.write(text + "\n")
        if not args.quiet:
            sys.stderr.write(human_summary(result) + "\n")
    else:
        if args.json_path:
            with open(args.json_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        print(human_summary(result))
    return 0 if result["requests"]["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""bench_peers.py: blast against its peers (wrk, oha, h2load, the async baseline), on nginx.

Normally started by scripts/bench-peers.sh, which installs the peers and builds blast.
Standard library only. Everything runs on 127.0.0.1 and every run is bounded in time.

Layout: nginx (one worker) is pinned to the LAST allowed CPU, every client to the others
(`taskset -c 0` on a 2-CPU machine), and every client runs under
`/usr/bin/time -f '%e %U %S %M'`, which gives wall, user, sys and peak RSS; client CPU
per request = (user + sys) / requests.

In each case every tool gets the same connections and duration; the tools take turns
within a round (the order rotates from round to round) and the tables show medians over
the rounds. nginx's own request counter (stub_status) is read before and after every
run and compared with what the tool says it did.

    python3 scripts/bench_peers.py --blast target/release/blast --quick
    python3 scripts/bench_peers.py --blast target/release/blast --cases 1,3 --rounds 5

Writes Markdown to stdout and to --out (default target/bench-peers.md), and every raw
figure as JSON beside it (same name, .json).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME_FMT = "%e %U %S %M"
ALL_CASES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
# examples/floor.rs in its two modes (case 9).
FLOOR_TOOLS = ("floor-epoll", "floor-uring")
# Tools compared in the closed-loop cases, in their first-round order.
CLOSED_TOOLS = ("blast", "wrk", "oha", "h2load")


class Abort(Exception):
    """SIGTERM / SIGHUP: unwind and clean up like Ctrl-C."""


# --------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_group(proc: subprocess.Popen | None, sig=signal.SIGTERM, grace: float = 5.0) -> None:
    """Stop a process started with start_new_session=True, and everything in its group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def capture(argv: list[str], timeout: float = 20.0) -> str:
    """stdout + stderr of a short command, or '' if it cannot run."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        return p.stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (taskset syntax)."""
    out, start, prev = [], None, None
    for c in sorted(cpus) + [None]:
        if start is None:
            start = prev = c
        elif c is not None and c == prev + 1:
            prev = c
        else:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = c
    return ",".join(out)


UNITS_US = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text: str) -> float | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ns|us|µs|ms|s|m|h)\s*", text)
    return float(m.group(1)) * UNITS_US[m.group(2)] if m else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_int(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_f(x, nd=2) -> str:
    return "—" if x is None else f"{x:,.{nd}f}"


def fmt_us(x) -> str:
    if x is None:
        return "—"
    if x < 1000:
        return f"{x:.0f} µs"
    if x < 1e6:
        return f"{x / 1e3:.2f} ms"
    return f"{x / 1e6:.2f} s"


def fmt_ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}×"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# nginx


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity {mask};
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
{user}
events {{
    worker_connections 16384;
    multi_accept on;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            return 200 "hello world\\n";
        }}
        location = /nginx_status {{
            stub_status;
        }}
    }}
{proxy}}}
"""

NGINX_PROXY = """\
    upstream mock {{
        server 127.0.0.1:{mock_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


# Case 11: the same `return 200` over TLS (ECDSA P-256 certificate, TLS 1.2 and 1.3, session
# cache and tickets on, as a terminating proxy has them). TLS 1.3 is held to one cipher
# suite, so that every client pays for the same one: h2load asks for AES-128 first, blast
# and wrk (OpenSSL's default) for AES-256, and an AES-128 handshake costs nginx less. The
# second server logs, per request, whether its TLS session was resumed and the cipher, for
# the new-connection runs.
NGINX_TLS = """\
    log_format tlsreuse '$ssl_session_reused:$ssl_cipher';
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384;
    ssl_session_cache shared:SSL:32m;
    ssl_session_tickets on;
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        location / {{
            return 200 "hello world\\n";
        }}
    }}
    server {{
        listen 127.0.0.1:{close_port} ssl backlog=4096;
        access_log {prefix}/logs/tls-reuse.log tlsreuse buffer=64k flush=200ms;
        location / {{
            return 200 "hello world\\n";
        }}
    }}
"""


def make_cert(dir: Path) -> tuple[Path, Path] | None:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (openssl), or None without it."""
    if not shutil.which("openssl"):
        return None
    cert, key = dir / "tls-cert.pem", dir / "tls-key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       capture_output=True, timeout=60)
    return (cert, key) if r.returncode == 0 else None


class Nginx:
    def __init__(self, prefix: Path, cpu: int, proxy_to: int | None = None,
                 tls: tuple[Path, Path] | None = None):
        self.prefix = prefix
        self.cpu = cpu
        self.port = free_port()
        self.proxy_port = free_port() if proxy_to else None
        self.proxy_to = proxy_to
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.tls_close_port = free_port() if tls else None
        self.proc: subprocess.Popen | None = None

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}/"

    @property
    def tls_close_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_close_port}/"

    def reuse_log(self) -> Path:
        return self.prefix / "logs" / "tls-reuse.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/"

    def start(self) -> None:
        for d in ("logs", "tmp"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        proxy = ""
        if self.proxy_to:
            proxy = NGINX_PROXY.format(mock_port=self.proxy_to, port=self.proxy_port)
        if self.tls:
            proxy += NGINX_TLS.format(cert=self.tls[0], key=self.tls[1], port=self.tls_port,
                                      close_port=self.tls_close_port, prefix=self.prefix)
        conf = NGINX_CONF.format(
            mask="1" + "0" * self.cpu,
            prefix=self.prefix,
            user="user root;" if os.geteuid() == 0 else "",
            port=self.port,
            proxy=proxy,
        )
        (self.prefix / "nginx.conf").write_text(conf)
        argv = ["taskset", "-c", str(self.cpu), nginx_bin(), "-p", str(self.prefix),
                "-c", str(self.prefix / "nginx.conf")]
        self.out = open(self.prefix / "nginx.out", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        ok = wait_port(self.port, self.proc) and (
            not self.proxy_port or wait_port(self.proxy_port, self.proc)) and (
            not self.tls_port or wait_port(self.tls_port, self.proc))
        if not ok:
            self.stop()
            log = (self.prefix / "nginx.out").read_text(errors="replace")
            log += (self.prefix / "logs" / "error.log").read_text(errors="replace") \
                if (self.prefix / "logs" / "error.log").exists() else ""
            raise RuntimeError(f"nginx did not start:\n{log}")

    def requests(self) -> int | None:
        """nginx's request counter (it counts this status request too)."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", "/nginx_status")
            body = c.getresponse().read().decode()
            c.close()
            return int(body.splitlines()[2].split()[2])
        except (OSError, ValueError, IndexError, http.client.HTTPException):
            return None

    def stop(self) -> None:
        # SIGTERM to the master is nginx's fast shutdown.
        stop_group(self.proc)
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# --------------------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds if args.rounds else (1 if args.quick else 3)
        self.dur = args.duration if args.duration else (2 if args.quick else 5)
        allowed = sorted(os.sched_getaffinity(0))
        self.server_cpu = allowed[-1]
        self.client_cpus = allowed[:-1] or allowed
        self.shared_cpu = len(allowed) == 1
        self.client_pin = cpu_list(self.client_cpus)
        self.blast = str(Path(args.blast).resolve())
        self.floor = str(Path(args.floor).resolve())
        self.oha = (os.path.abspath(args.oha) if args.oha else None) or shutil.which("oha") or \
            (str(Path.home() / ".cargo/bin/oha") if (Path.home() / ".cargo/bin/oha").exists() else None)
        # abspath, not resolve(): a venv's python is a symlink out of the venv.
        self.baseline_py = os.path.abspath(args.baseline_python) if args.baseline_python else None
        # wrk2 is not packaged: the project's shared tools hold a build (see --wrk2).
        self.wrk2 = os.path.abspath(args.wrk2) if args.wrk2 else (
            shutil.which("wrk2") or next((str(p) for p in (ROOT.parent / "shared" / "tools" / "wrk2",)
                                          if p.exists()), None))
        self.baseline = str(ROOT / "scripts" / "async_baseline.py")
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
        self.rundir = self.tmp / "runs"
        self.rundir.mkdir()
        self.nruns = 0
        self.current: subprocess.Popen | None = None
        self.servers: list = []  # Nginx or Popen, stopped at the end
        self.nginx: Nginx | None = None
        self.md: list[str] = []
        self.data: dict = {"cases": {}}
        self.mock_cmd = shlex.split(args.mock_cmd) if args.mock_cmd else [self.blast, "mock"]
        self.wrk_lua = self.tmp / "pipeline.lua"
        self.wrk_lua.write_text(WRK_PIPELINE_LUA)

    # ---- output

    def emit(self, text: str = "") -> None:
        print(text, flush=True)
        self.md.append(text)

    def progress(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def short(self, argv: list[str]) -> str:
        """A command line for the report, with the temp dir and blast's path shortened."""
        s = shlex.join(argv)
        s = s.replace(str(self.tmp), "$TMP").replace(self.blast, "blast")
        if self.baseline_py:
            s = s.replace(self.baseline_py, "python")
        s = s.replace(self.baseline, "scripts/async_baseline.py")
        if self.oha:
            s = s.replace(self.oha, "oha")
        return s

    # ---- running one client

    def run(self, label: str, argv: list[str], *, timeout: float, pin: bool = True,
            count: bool = True) -> dict:
        """Run one client under /usr/bin/time (and taskset), with nginx's counter around it."""
        self.nruns += 1
        base = self.rundir / f"{self.nruns:03d}-{label}"
        tfile = Path(f"{base}.time")
        prefix = ["taskset", "-c", self.client_pin] if pin else []
        full = prefix + ["/usr/bin/time", "-f", TIME_FMT, "-o", str(tfile)] + argv
        before = self.nginx.requests() if (count and self.nginx) else None
        self.progress(self.short(prefix + argv))
        t0 = time.monotonic()
        with open(f"{base}.out", "wb") as fo, open(f"{base}.err", "wb") as fe:
            p = subprocess.Popen(full, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=self.tmp)
            self.current = p
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(p, signal.SIGKILL)
                rc = "timeout"
            finally:
                self.current = None
        took = time.monotonic() - t0
        after = self.nginx.requests() if (count and self.nginx) else None
        res = {
            "label": label,
            "argv": full,
            "cmd": self.short(prefix + argv),
            "rc": rc,
            "took_s": round(took, 3),
            "stdout": Path(f"{base}.out").read_text(errors="replace"),
            "stderr": Path(f"{base}.err").read_text(errors="replace")[-4000:],
            "nginx_requests": (after - before - 1) if (before is not None and after is not None) else None,
            "loadavg": os.getloadavg()[0],
        }
        res.update(parse_time(tfile))
        time.sleep(self.args.pause)
        return res

    # ---- per tool: command line and parser -> normalized metrics

    def tool_available(self, tool: str) -> bool:
        if tool == "oha":
            return bool(self.oha) and os.access(self.oha, os.X_OK)
        if tool == "baseline":
            return bool(self.baseline_py) and os.access(self.baseline_py, os.X_OK)
        if tool in ("wrk", "h2load"):
            return shutil.which(tool) is not None
        if tool == "wrk2":
            return bool(self.wrk2) and os.access(self.wrk2, os.X_OK)
        if tool in FLOOR_TOOLS:
            return os.access(self.floor, os.X_OK)
        return True

    def closed(self, tool: str, url: str, conns: int, pipeline: int = 1,
               requests: int | None = None, label: str = "", wrap: tuple | list = (),
               blast_args: tuple | list = ()) -> dict:
        """One closed-loop run of `tool`: for `self.dur` seconds, or exactly `requests`;
        `wrap` goes before the tool's command (a profiler); `blast_args` are blast's own."""
        d = self.dur
        js = self.rundir / f"{self.nruns + 1:03d}-{tool}.json"
        if tool == "blast":
            argv = [self.blast, "--cores", "1", "--conns", str(conns), "-q", "--json", str(js),
                    *blast_args]
            if pipeline > 1:
                argv += ["--pipeline", str(pipeline)]
            argv += ["--requests", str(requests)] if requests else ["--duration", f"{d}s"]
            argv.append(url)
        elif tool == "wrk":
            assert not requests, "wrk cannot send an exact number of requests"
            argv = ["wrk", "-t1", f"-c{conns}", f"-d{d}s", "--latency"]
            if pipeline > 1:
                argv += ["-s", str(self.wrk_lua), url, "--", str(pipeline)]
            else:
                argv.append(url)
        elif tool == "oha":
            assert pipeline == 1, "oha does not pipeline"
            argv = [self.oha, "-c", str(conns), "--no-tui", "--output-format", "json"]
            argv += ["-n", str(requests)] if requests else ["-z", f"{d}s"]
            argv.append(url)
        elif tool == "h2load":
            argv = ["h2load", "-c", str(conns), "-t", "1", "-m", str(pipeline), "--h1"]
            argv += ["-n", str(requests)] if requests else ["-D", str(d)]
            argv.append(url)
        elif tool == "baseline":
            argv = [self.baseline_py, self.baseline, url, "--concurrent", str(conns), "-q",
                    "--json", str(js)]
            argv += ["--requests", str(requests)] if requests else ["--duration", str(d)]
        elif tool in FLOOR_TOOLS:
            assert pipeline == 1 and not requests, "the floor client runs for a time, unpipelined"
            host = urllib.parse.urlsplit(url).netloc
            argv = [self.floor, tool.split("-")[1], str(conns), str(d), host]
        else:
            raise ValueError(tool)
        bound = (requests / 2000 + 60) if requests else (d + 60)
        r = self.run(label or tool, [*wrap, *argv], timeout=bound)
        r["tool"] = tool
        r["pipeline"] = pipeline
        r["metrics"] = parse_tool(tool, r, js)
        return r

    # ---- the cases

    def rounds_of(self, tools: list[str], fn, once: tuple = ()) -> dict[str, list[dict]]:
        """Run fn(tool) for every tool, round after round, rotating the order; tools in
        `once` run in the first round only."""
        out: dict[str, list[dict]] = {t: [] for t in tools}
        for r in range(self.rounds):
            order = tools[r % len(tools):] + tools[:r % len(tools)]
            for t in order:
                if r > 0 and t in once:
                    continue
                res = fn(t)
                res["round"] = r + 1
                out[t].append(res)
        return out

    def closed_case(self, key: str, title: str, conns: int, tools: list[str],
                    pipeline: int = 1, once: tuple = (), intro: str = "") -> dict:
        missing = [t for t in tools if not self.tool_available(t)]
        tools = [t for t in tools if self.tool_available(t)]
        if missing:
            intro += f" Not available, skipped: {', '.join(tool_name(t) for t in missing)}."
        runs = self.rounds_of(tools, lambda t: self.closed(t, self.nginx.url, conns, pipeline),
                              once=once)
        summary = {t: summarize(rs) for t, rs in runs.items()}
        self.data["cases"][key] = {"title": title, "conns": conns, "pipeline": pipeline,
                                   "duration_s": self.dur, "runs": runs, "summary": summary}
        self.emit(f"## {title}")
        self.emit()
        if intro:
            self.emit(intro)
            self.emit()
        wrk = summary.get("wrk")
        header = ["tool", "req/s", "client CPU µs/req", "peak RSS MB", "p50", "p99",
                  "req/s ÷ wrk", "CPU/req ÷ wrk", "nginx count"]
        rows = []
        for t in tools:
            s = summary[t]
            rows.append([
                tool_name(t), fmt_rps(s), fmt_f(s["cpu_us_per_req"]), fmt_f(s["rss_mb"], 1),
                fmt_p50(s), fmt_us(s["p99_us"]),
                fmt_ratio(s["rps"], wrk and wrk["rps"]),
                fmt_ratio(s["cpu_us_per_req"], wrk and wrk["cpu_us_per_req"]),
                count_check(runs[t], conns * pipeline),
            ])
        self.emit(md_table(header, rows))
        self.emit()
        paired = paired_cpu_ratios(runs)
        if paired:
            self.emit("CPU/req ÷ wrk round by round (each run against wrk's run of the same "
                      "round, which is less exposed to the machine's drift than the ratio of "
                      "medians above), median over the rounds: "
                      + ", ".join(f"{tool_name(t)} {r:.2f}×" for t, r in paired.items()) + ".")
            self.emit()
        self.emit_rounds_note(runs, once)
        self.emit_failures(runs)
        self.emit_commands(runs)
        return summary

    def emit_rounds_note(self, runs: dict, once: tuple = ()) -> None:
        n = self.rounds
        txt = f"Medians of {n} round(s) of {self.dur} s" if n > 1 else f"One round of {self.dur} s"
        if once and n > 1:
            txt += f" ({', '.join(tool_name(t) for t in once)}: one round)"
        if n > 1:
            txt += "; `±` is half the spread between the best and worst round"
        txt += ". `nginx count`: ✓ nginx served exactly what the tool reports; " \
               "`+N` nginx served N more (requests in flight when the tool stopped counting); " \
               "✗ a larger or negative difference."
        self.emit(txt)
        self.emit()

    def emit_failures(self, runs: dict) -> None:
        bad = []
        for t, rs in runs.items():
            for r in rs:
                m = r.get("metrics", {})
                if r["rc"] != 0 or m.get("error") or m.get("errors"):
                    bad.append(f"- {tool_name(t)} round {r.get('round', 1)}: exit {r['rc']}"
                               + (f", {m.get('error')}" if m.get("error") else "")
                               + (f", errors {m.get('errors')}" if m.get("errors") else ""))
        if bad:
            self.emit("Problems:")
            self.emit()
            self.emit("\n".join(bad))
            self.emit()

    def emit_commands(self, runs: dict, server=None) -> None:
        """The distinct command lines of `runs`, then the command of the `server` process
        (the mock) if there is one."""
        self.emit("Commands (each wrapped in `/usr/bin/time -f '%e %U %S %M' -o FILE`):")
        self.emit()
        self.emit("```")
        seen = []
        for rs in runs.values():
            for r in rs:
                if r["cmd"] not in seen:
                    seen.append(r["cmd"])
        self.emit("\n".join(seen))
        self.emit("```")
        self.emit()
        if server is not None:
            self.emit("```")
            self.emit(self.short(server.args))
            self.emit("```")
            self.emit()

    def case1(self):
        intro = (f"GET / of nginx (`return 200`), 100 keep-alive connections, "
                 f"client on CPU {self.client_pin}, nginx on CPU {self.server_cpu}. "
                 "oha's req/s is the responses it received over its run time (its own "
                 "`requestsPerSec` also counts the requests it aborts at the deadline).")
        s = self.closed_case("1", "1. Closed loop, 100 connections", 100,
                             list(CLOSED_TOOLS) + ["baseline"], once=("baseline",), intro=intro)
        self.case1_summary = s

    def case2(self):
        intro = "As case 1 with 1000 connections."
        self.closed_case("2", "2. Closed loop, 1000 connections", 1000, list(CLOSED_TOOLS),
                         intro=intro)

    def case9(self):
        intro = ("As case 1, with `examples/floor.rs`: the least a closed-loop client can do per "
                 "request (one `sendto`, one receive, an httparse of the head; no executor, no "
                 "timing, no statistics), waiting for its sockets with epoll (blast's socket path "
                 "without its runtime or statistics) or with io_uring (one ring with deferred task work, "
                 "a multishot receive per connection into a provided-buffer ring, the sends of a "
                 "turn in one `io_uring_enter`). How close blast is to this floor is what its own "
                 "machinery costs; how far the floor is from wrk is what the kernel leaves to win.")
        self.closed_case("9", "9. The floor: a minimal client of each kind, 100 connections", 100,
                         ["blast", "wrk", *FLOOR_TOOLS], intro=intro)

    def case10(self):
        """Where a request's CPU goes: each tool under `perf record`, its samples sorted into
        kernel paths and user space, divided by the requests nginx served."""
        title = "10. Where a request's CPU goes, 100 connections"
        perf = shutil.which("perf")
        why = None if perf else "perf is not installed (Debian: linux-perf)"
        if perf and subprocess.run([perf, "record", "-q", "-o", str(self.tmp / "check.perf"),
                                    "true"], capture_output=True, timeout=60).returncode != 0:
            why = "`perf record` does not work here (perf_event_paranoid, or no permission)"
        self.emit(f"## {title}")
        self.emit()
        if why:
            self.emit(f"Skipped: {why}.")
            self.emit()
            return
        tools = [t for t in ["blast", "wrk", "floor-epoll"] if self.tool_available(t)]

        def one(tool):
            data = self.rundir / f"{self.nruns + 1:03d}-{tool}.perf"
            wrap = [perf, "record", "-q", "-F", str(PERF_HZ), "-g", "-o", str(data), "--"]
            r = self.closed(tool, self.nginx.url, 100, label=f"{tool}-perf", wrap=wrap)
            script = capture([perf, "script", "-i", str(data), "-F", "period,ip,sym,dso"],
                             timeout=300)
            served = r["nginx_requests"]
            r["buckets_us"] = {k: v / 1e3 / served for k, v in cpu_buckets(script).items()} \
                if served else {}
            r["perf_total_us"] = sum(r["buckets_us"].values()) if served else None
            data.unlink(missing_ok=True)
            return r

        runs = self.rounds_of(tools, one)
        med = {t: {b: median([r["buckets_us"].get(b, 0.0) for r in rs if r["buckets_us"]])
                   for b in PERF_BUCKETS} for t, rs in runs.items()}
        for t in tools:
            med[t]["total"] = median([r["perf_total_us"] for r in runs[t]])

        self.emit(f"Each tool as in case 1 (GET / of nginx, 100 connections, one core), under "
                  f"`perf record -F {PERF_HZ} -g`. Every sample is put in the first bucket its "
                  "call stack matches, in the order of the rows; the CPU time of each bucket is "
                  "divided by the requests nginx served during the run. Medians over the "
                  "rounds, µs per request. The sampling costs each tool a little CPU of its own.")
        self.emit()
        wrk_total = med.get("wrk", {}).get("total")
        rows = [[label] + [fmt_f(med[t][b]) for t in tools] for b, label in PERF_BUCKETS.items()]
        rows.append(["**total**"] + [f"**{fmt_f(med[t]['total'])}**" for t in tools])
        rows.append(["total ÷ wrk (medians)"]
                    + [fmt_ratio(med[t]["total"], wrk_total) for t in tools])
        paired = paired_ratios(runs, lambda r: r.get("perf_total_us"))
        paired["wrk"] = 1.0
        rows.append(["total ÷ wrk (round by round)"]
                    + [f"{paired[t]:.2f}×" if t in paired else "—" for t in tools])
        self.emit(md_table(["µs per request"] + [tool_name(t) for t in tools], rows))
        self.emit()
        self.data["cases"]["10"] = {"title": title, "conns": 100, "duration_s": self.dur,
                                    "perf_hz": PERF_HZ, "runs": runs, "median_us": med,
                                    "paired_total_ratio": paired}
        if "blast" in med and wrk_total:
            b = med["blast"]
            user = b["user"]
            self.emit(f"0.85× wrk's total is {0.85 * wrk_total:.2f} µs; blast's kernel part "
                      f"alone (everything but user space) is {b['total'] - user:.2f} µs.")
            self.emit()
        self.emit_failures(runs)
        self.emit_commands(runs)

    def case11(self):
        """TLS: keep-alive CPU per request (blast vs wrk), and new connections per second
        (blast vs h2load --h1), against nginx terminating TLS on its own core."""
        title = "11. TLS (https://), nginx on one core"
        if not (self.nginx and self.nginx.tls):
            self.emit(f"## {title}")
            self.emit()
            self.emit("Skipped: no certificate (openssl is missing) or nginx without TLS.")
            self.emit()
            return
        conns = 100
        # Every tool skips certificate checks the same way: blast's --insecure still verifies
        # the handshake signatures, which is the part that costs CPU.
        tls = ["--insecure"]
        intro = (f"(a) Keep-alive: GET / of nginx over TLS (ECDSA P-256, TLS 1.3 as negotiated), "
                 f"{conns} connections, client on CPU {self.client_pin}, nginx on CPU "
                 f"{self.server_cpu}. The handshakes happen once per connection; the figure is "
                 "the CPU per request of encrypting and decrypting.")
        # blast also with --slack (off by default in a closed loop): it sleeps where a
        # response does not wake it, which spares nginx the wake-ups (see PERFORMANCE.md).
        slack = ["--slack", "500us"]
        kinds = {"blast": tls, "blast-slack": tls + slack}
        tools = [*kinds] + (["wrk"] if self.tool_available("wrk") else [])

        def keep_alive(tool):
            r = self.closed("blast" if tool in kinds else tool, self.nginx.tls_url, conns,
                            label=f"tls-{tool}", blast_args=kinds.get(tool, ()))
            r["tool"] = tool
            return r

        runs = self.rounds_of(tools, keep_alive)
        summary = {t: summarize(rs) for t, rs in runs.items()}
        self.data["cases"]["11a"] = {"title": title + " (keep-alive)", "conns": conns,
                                     "duration_s": self.dur, "runs": runs, "summary": summary}
        self.emit(f"## {title}")
        self.emit()
        self.emit(intro)
        self.emit()
        wrk = summary.get("wrk")
        rows = [[variant_name(t), fmt_rps(summary[t]), fmt_f(summary[t]["cpu_us_per_req"]),
                 fmt_f(summary[t]["rss_mb"], 1), fmt_p50(summary[t]), fmt_us(summary[t]["p99_us"]),
                 fmt_ratio(summary[t]["cpu_us_per_req"], wrk and wrk["cpu_us_per_req"]),
                 count_check(runs[t], conns)] for t in tools]
        self.emit(md_table(["tool", "req/s", "client CPU µs/req", "peak RSS MB", "p50", "p99",
                            "CPU/req ÷ wrk", "nginx count"], rows))
        self.emit()
        paired = paired_cpu_ratios(runs)
        if paired:
            self.emit("CPU/req ÷ wrk round by round, median: "
                      + ", ".join(f"{variant_name(t)} {r:.2f}×" for t, r in paired.items())
                      + ".")
            self.emit()
        self.emit_rounds_note(runs)
        self.emit_failures(runs)
        self.emit_commands(runs)

        # (b) A new connection, and a TLS handshake, for every request.
        close = ["-H", "Connection: close"]
        kinds = {"blast": tls + close, "blast-slack": tls + close + slack,
                 "blast-full": tls + close + ["--no-tls-resume"]}
        tools = list(kinds) + (["h2load"] if self.tool_available("h2load") else [])
        log = self.nginx.reuse_log()

        # Bounded by a count: h2load reconnects after `Connection: close` with -n, but its
        # duration mode (-D) does not end then.
        n = 3_000 if self.quick else 20_000

        def one(tool):
            start = log.stat().st_size if log.exists() else 0
            url = self.nginx.tls_close_url
            if tool == "h2load":
                js = self.rundir / "unused.json"
                argv = ["h2load", "--h1", "-c", str(conns), "-t", "1", "-n", str(n), *close, url]
                r = self.run("tls-close-h2load", argv, timeout=n / 200 + 60)
                r["metrics"] = parse_tool("h2load", r, js)
            else:
                r = self.closed("blast", url, conns, requests=n, label=f"tls-close-{tool}",
                                blast_args=kinds[tool])
            r["tool"] = tool
            time.sleep(0.5)  # nginx flushes its log every 200 ms
            seen = log.read_bytes()[start:].decode().split() if log.exists() else []
            seen = [x.partition(":") for x in seen]
            r["nginx_resumed"] = sum(1 for reused, _, _ in seen if reused == "r")
            r["nginx_logged"] = len(seen)
            r["nginx_ciphers"] = sorted({cipher for _, _, cipher in seen})
            return r

        runs = self.rounds_of(tools, one)
        summary = {t: summarize(rs) for t, rs in runs.items()}
        self.data["cases"]["11b"] = {"title": title + " (a connection per request)",
                                     "conns": conns, "duration_s": self.dur, "runs": runs,
                                     "summary": summary}
        self.emit("(b) A new connection and TLS handshake for every request (`Connection: close`), "
                  f"{conns} concurrent clients, {n} requests. blast and h2load resume sessions "
                  "(their default), "
                  "`blast --no-tls-resume` makes full handshakes; `resumed` is nginx's own "
                  "count (`$ssl_session_reused`) over the requests it logged, and `cipher` "
                  "what it negotiated (nginx allows TLS 1.3 one suite, so that every client "
                  "pays for the same).")
        self.emit()
        h2 = summary.get("h2load")
        rows = []
        for t in tools:
            s = summary[t]
            logged = sum(r["nginx_logged"] for r in runs[t])
            resumed = sum(r["nginx_resumed"] for r in runs[t])
            rows.append([
                variant_name(t),
                fmt_rps(s), fmt_f(s["cpu_us_per_req"]), fmt_p50(s), fmt_us(s["p99_us"]),
                f"{resumed / logged * 100:.0f}%" if logged else "-",
                ", ".join(sorted({c for r in runs[t] for c in r["nginx_ciphers"]})) or "-",
                fmt_ratio(s["rps"], h2 and h2["rps"]),
            ])
        self.emit(md_table(["tool", "connections/s", "client CPU µs/conn", "p50", "p99",
                            "resumed", "cipher", "conn/s ÷ h2load"], rows))
        self.emit()
        rps = lambda r: r.get("metrics", {}).get("rps")  # noqa: E731
        paired = {t: pair_ratio(runs, t, "h2load", rps) for t in kinds}
        paired = {t: x for t, x in paired.items() if x is not None}
        if paired:
            self.emit("conn/s ÷ h2load round by round, median: "
                      + ", ".join(f"{variant_name(t)} {x:.2f}×" for t, x in paired.items())
                      + ".")
            self.emit()
        self.emit_rounds_note(runs)
        self.emit_failures(runs)
        self.emit_commands(runs)

    def case3(self):
        intro = ("HTTP/1.1 pipelining, 16 requests outstanding per connection, 100 connections. "
                 "wrk pipelines with a Lua script that concatenates 16 `wrk.format()` requests; "
                 "oha cannot pipeline.")
        self.closed_case("3", "3. Pipelined ×16, 100 connections", 100,
                         ["blast", "wrk", "h2load"], pipeline=16, intro=intro)

    def counts(self):
        """Exact-count runs: what each tool says it sent against what nginx served."""
        n = 20_000 if self.quick else 100_000
        plan = [("blast", 1), ("h2load", 1), ("oha", 1), ("blast", 16), ("h2load", 16)]
        nb = 5_000 if self.quick else 20_000
        rows, runs = [], []
        for tool, pipe in plan:
            if not self.tool_available(tool):
                continue
            r = self.closed(tool, self.nginx.url, 100, pipe, requests=n, label=f"{tool}-n")
            r["asked"] = n
            runs.append(r)
        if self.tool_available("baseline"):
            r = self.closed("baseline", self.nginx.url, 100, 1, requests=nb, label="baseline-n")
            r["asked"] = nb
            runs.append(r)
        for r in runs:
            m = r["metrics"]
            served = r["nginx_requests"]
            ok = served is not None and served == r["asked"] == m.get("requests")
            rows.append([tool_name(r["tool"], r["pipeline"]), fmt_int(r["asked"]), fmt_int(m.get("requests")),
                         fmt_int(served), "✓" if ok else "✗"])
        self.data["cases"]["counts"] = {"runs": runs}
        self.emit("## Request counts checked against nginx")
        self.emit()
        self.emit("Runs bounded by a request count (`--requests` / `-n`), 100 connections; "
                  "nginx's stub_status counter is read before and after each run.")
        self.emit()
        self.emit(md_table(["tool", "asked", "tool reports", "nginx served", "exact"], rows))
        self.emit()
        self.emit_failures({"counts": runs})
        self.emit_commands({"counts": runs})

    def case4(self):
        rate = self.args.rate
        conns = 100
        d = self.dur
        tools = ["blast", "blast-slack1ms"] + (["oha"] if self.tool_available("oha") else []) \
            + (["wrk2"] if self.tool_available("wrk2") else [])

        def one(tool):
            js = self.rundir / f"{self.nruns + 1:03d}-{tool}.json"
            if tool.startswith("blast"):
                argv = [self.blast, "--cores", "1", "--conns", str(conns), "--rate", str(rate),
                        "--duration", f"{d}s", "-q", "--json", str(js), self.nginx.url]
                if tool == "blast-slack1ms":
                    argv[-1:-1] = ["--slack", "1ms"]
            elif tool == "wrk2":
                argv = [self.wrk2, "-t1", f"-c{conns}", f"-d{d}s", f"-R{rate}", "--latency",
                        self.nginx.url]
            else:
                argv = [self.oha, "-c", str(conns), "-q", str(rate), "--latency-correction",
                        "-z", f"{d}s", "--no-tui", "--output-format", "json", self.nginx.url]
            r = self.run(f"{tool}-rate", argv, timeout=d + 60)
            r["tool"] = tool
            r["metrics"] = parse_tool(tool.split("-")[0], r, js)
            return r

        runs = self.rounds_of(tools, one)
        summary = {t: summarize(rs) for t, rs in runs.items()}
        self.data["cases"]["4"] = {"rate": rate, "conns": conns, "duration_s": d, "runs": runs,
                                   "summary": summary}
        self.emit(f"## 4. Open loop at {rate:,} req/s")
        self.emit()
        self.emit(f"{conns} connections, {d} s, a fixed schedule; latency counted from each "
                  "request's intended send time (blast; oha with `--latency-correction`; wrk2 "
                  "by construction). blast runs at its default `--slack` (150us) and with "
                  "`--slack 1ms`; wrk2 sends on 1 ms ticks.")
        self.emit()
        rows = []
        for t in tools:
            s = summary[t]
            blast = t.startswith("blast")
            achieved = s["achieved_rps"] if blast else s["rps"]
            rows.append([tool_name(t), fmt_int(rate), fmt_int(achieved),
                         fmt_us(s["send_lag_p99_us"]) if blast else "—",
                         fmt_us(s["p50_us"]), fmt_us(s["p99_us"]),
                         fmt_f(s["cpu_us_per_req"]), fmt_f(s["rss_mb"], 1),
                         count_check(runs[t], conns)])
        self.emit(md_table(["tool", "target req/s", "achieved req/s", "send lag p99", "p50", "p99",
                            "client CPU µs/req", "peak RSS MB", "nginx count"], rows))
        self.emit()
        cpu = lambda r: r.get("metrics", {}).get("cpu_us_per_req")  # noqa: E731
        goals = [("blast", "oha"), ("blast-slack1ms", "wrk2")]
        pairs = [(a, b, pair_ratio(runs, a, b, cpu)) for a, b in goals if a in runs and b in runs]
        if pairs:
            self.emit("CPU per request, round by round (each run against the peer's run of the "
                      "same round), median over the rounds: "
                      + ", ".join(f"{tool_name(a)} ÷ {b} {r:.2f}×" for a, b, r in pairs
                                  if r is not None) + ".")
            self.emit()
        self.emit("blast's achieved rate is `open_loop.achieved_rps` (requests started per second "
                  "of the schedule); the others' is the responses they received per second of "
                  "their run. "
                  + ("Medians of %d rounds." % self.rounds if self.rounds > 1 else "One round."))
        self.emit()
        self.emit_failures(runs)
        self.emit_commands(runs)

    def case5(self):
        sizes = (20_000, 200_000) if self.quick else (100_000, 1_000_000)
        conns = 1000

        def one(n):
            js = self.rundir / f"{self.nruns + 1:03d}-blast.json"
            argv = [self.blast, "--cores", "1", "--conns", str(conns), "--requests", str(n),
                    "-q", "--json", str(js), self.nginx.url]
            r = self.run(f"blast-rss-{n}", argv, timeout=n / 2000 + 60)
            r["tool"] = "blast"
            r["metrics"] = parse_tool("blast", r, js)
            r["asked"] = n
            return r

        runs = self.rounds_of(list(sizes), one)
        summary = {n: summarize(rs) for n, rs in runs.items()}
        self.data["cases"]["5"] = {"conns": conns, "runs": {str(k): v for k, v in runs.items()},
                                   "summary": {str(k): v for k, v in summary.items()}}
        self.emit("## 5. Memory: blast's peak RSS against the number of requests")
        self.emit()
        self.emit(f"{conns} connections, one core, runs bounded by `--requests`; peak RSS from "
                  "`/usr/bin/time` (blast's own `peak_rss_bytes` in brackets).")
        self.emit()
        rows = []
        for n in sizes:
            s = summary[n]
            exact = all(r["nginx_requests"] == n == r["metrics"].get("requests") for r in runs[n])
            rows.append([fmt_int(n), fmt_int(s["rps"]), f"{fmt_f(s['rss_mb'], 1)} "
                         f"({fmt_f(s['self_rss_mb'], 1)})", fmt_f(s["cpu_us_per_req"]),
                         fmt_us(s["p99_us"]), "✓" if exact else "✗"])
        a, b = summary[sizes[0]]["rss_mb"], summary[sizes[1]]["rss_mb"]
        self.emit(md_table(["requests", "req/s", "peak RSS MB", "client CPU µs/req", "p99",
                            "nginx served exactly"], rows))
        self.emit()
        if a is not None and b is not None:
            self.emit(f"Difference: {b - a:+.1f} MB for {sizes[1] // sizes[0]}× the requests "
                      f"({'median of %d rounds' % self.rounds if self.rounds > 1 else 'one round'}).")
            self.emit()
        self.emit_failures(runs)
        self.emit_commands(runs)

    def case6(self):
        self.emit("## 6. The async baseline against blast, 100 connections, one core")
        self.emit()
        s1 = getattr(self, "case1_summary", None)
        if not self.tool_available("baseline"):
            self.emit("Skipped: no Python with aiohttp for the baseline (`--baseline-python`).")
            self.emit()
            return
        if not s1 or "baseline" not in s1:
            self.emit("Skipped: needs case 1.")
            self.emit()
            return
        b, a = s1["blast"], s1["baseline"]
        rows = [[tool_name(t), fmt_int(s["rps"]), fmt_f(s["cpu_us_per_req"]), fmt_f(s["rss_mb"], 1),
                 fmt_us(s["p50_us"]), fmt_us(s["p99_us"])] for t, s in (("blast", b), ("baseline", a))]
        rows.append(["**blast ÷ baseline**", fmt_ratio(b["rps"], a["rps"]),
                     fmt_ratio(b["cpu_us_per_req"], a["cpu_us_per_req"]),
                     fmt_ratio(b["rss_mb"], a["rss_mb"]), fmt_ratio(b["p50_us"], a["p50_us"]),
                     fmt_ratio(b["p99_us"], a["p99_us"])])
        self.emit(md_table(["tool", "req/s", "client CPU µs/req", "peak RSS MB", "p50", "p99"], rows))
        self.emit()
        self.emit(f"From case 1 (same nginx, 100 connections, {self.dur} s, client pinned to CPU "
                  f"{self.client_pin}; blast `--cores 1`, the baseline is one asyncio loop): "
                  f"blast completed **{fmt_ratio(b['rps'], a['rps'])}** the baseline's requests "
                  f"per second, at {fmt_ratio(b['cpu_us_per_req'], a['cpu_us_per_req'])} its CPU "
                  "per request."
                  + (" Exact-count runs of both are in the counts table."
                     if "counts" in self.data["cases"] else ""))
        self.emit()
        self.data["cases"]["6"] = {"blast": b, "baseline": a}

    # ---- cases with the mock

    def mock_available(self) -> bool:
        if self.args.no_mock:
            return False
        out = capture(self.mock_cmd + ["--help"])
        # `blast mock --help` on a blast without the subcommand parses `mock` as the URL and
        # prints the main help, with exit 0: look for the mock's own option instead.
        return "--listen" in out

    def start_mock(self, cores: int, pin: str | None) -> tuple[subprocess.Popen, int]:
        port = free_port()
        argv = (["taskset", "-c", pin] if pin else []) + self.mock_cmd + [
            "--listen", f"127.0.0.1:{port}", "--cores", str(cores)]
        log = open(self.tmp / f"mock-{port}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        self.servers.append(p)
        if not wait_port(port, p):
            stop_group(p)
            raise RuntimeError("blast mock did not start: "
                               + (self.tmp / f"mock-{port}.log").read_text(errors="replace"))
        return p, port

    def mock_skip(self, title: str) -> bool:
        if self.mock_available():
            return False
        self.emit(f"## {title}")
        self.emit()
        self.emit("Skipped: this blast has no `mock` subcommand "
                  f"(`{self.short(self.mock_cmd)} --help` does not list `--listen`).")
        self.emit()
        return True

    def case7(self):
        title = "7. What a reverse proxy adds: nginx in front of `blast mock`"
        if self.mock_skip(title):
            return
        mock, mport = self.start_mock(1, str(self.server_cpu))
        px = Nginx(self.tmp / "nginx-proxy", self.server_cpu, proxy_to=mport)
        px.start()
        self.servers.append(px)
        rate, conns, d = self.args.proxy_rate, 50, self.dur
        targets = {"direct": f"http://127.0.0.1:{mport}/", "proxy": px.proxy_url}

        def one(which):
            js = self.rundir / f"{self.nruns + 1:03d}-blast.json"
            argv = [self.blast, "--cores", "1", "--conns", str(conns), "--rate", str(rate),
                    "--duration", f"{d}s", "--api", "ollama-generate", "--no-stream", "-q",
                    "--json", str(js), targets[which]]
            r = self.run(f"blast-{which}", argv, timeout=d + 60, count=False)
            r["tool"] = "blast"
            r["metrics"] = parse_tool("blast", r, js)
            return r

        try:
            runs = self.rounds_of(["direct", "proxy"], one)
        finally:
            px.stop()
            stop_group(mock)
        summary = {k: summarize(v) for k, v in runs.items()}
        self.data["cases"]["7"] = {"rate": rate, "conns": conns, "duration_s": d, "runs": runs,
                                   "summary": summary}
        self.emit(f"## {title}")
        self.emit()
        self.emit(f"blast `--api ollama-generate --no-stream` at a fixed {rate:,} req/s over "
                  f"{conns} connections for {d} s, straight to the mock and through nginx "
                  "(`proxy_pass` to an upstream with `keepalive 64`, `proxy_http_version 1.1`, "
                  "`proxy_set_header Connection \"\"`). The mock (`--cores 1`) and nginx share "
                  f"CPU {self.server_cpu}; blast runs on CPU {self.client_pin}. "
                  + ("Medians of %d rounds." % self.rounds if self.rounds > 1 else "One round."))
        self.emit()
        keys = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9")]
        rows = []
        for k in ("direct", "proxy"):
            s = summary[k]
            rows.append([k if k == "direct" else "through nginx", fmt_int(s["rps"])]
                        + [fmt_us(s[m]) for m, _ in keys])
        dlt = []
        for m, _ in keys:
            a, b = summary["direct"][m], summary["proxy"][m]
            dlt.append("—" if a is None or b is None else f"{'+' if b >= a else '−'}{fmt_us(abs(b - a))}")
        rows.append(["**added by the proxy**", ""] + dlt)
        self.emit(md_table(["path", "req/s"] + [n for _, n in keys], rows))
        self.emit()
        self.emit_failures(runs)
        self.emit_commands(runs, server=mock)

    def case8(self):
        title = "8. Scaling: blast on 1 core against 2 cores"
        if self.mock_skip(title):
            return
        mock, mport = self.start_mock(2, None)
        url = f"http://127.0.0.1:{mport}/"
        conns, d = 100, self.dur

        def one(cores):
            js = self.rundir / f"{self.nruns + 1:03d}-blast.json"
            argv = [self.blast, "--cores", str(cores), "--conns", str(conns), "--duration", f"{d}s",
                    "--api", "ollama-generate", "--no-stream", "-q", "--json", str(js), url]
            r = self.run(f"blast-cores{cores}", argv, timeout=d + 60, pin=False, count=False)
            r["tool"] = "blast"
            r["metrics"] = parse_tool("blast", r, js)
            return r

        try:
            runs = self.rounds_of([1, 2], one)
        finally:
            stop_group(mock)
        summary = {k: summarize(v) for k, v in runs.items()}
        self.data["cases"]["8"] = {"conns": conns, "duration_s": d,
                                   "runs": {str(k): v for k, v in runs.items()},
                                   "summary": {str(k): v for k, v in summary.items()}}
        ncpu = len(os.sched_getaffinity(0))
        self.emit(f"## {title}")
        self.emit()
        self.emit(f"Closed loop, {conns} connections, {d} s, `--api ollama-generate --no-stream` "
                  "against `blast mock --cores 2`; nothing pinned by taskset (blast and the mock "
                  f"pin their own executors). **On this {ncpu}-CPU machine client and server "
                  "share the CPUs**, so the 2-core row measures the pair, not blast alone. "
                  + ("Medians of %d rounds." % self.rounds if self.rounds > 1 else "One round."))
        self.emit()
        one_core = summary[1]["rps"]
        rows = [[f"`--cores {k}`", fmt_rps(s), fmt_f(s["cpu_us_per_req"]), fmt_us(s["p50_us"]),
                 fmt_us(s["p99_us"]), fmt_ratio(s["rps"], one_core)] for k, s in summary.items()]
        self.emit(md_table(["blast", "req/s", "client CPU µs/req", "p50", "p99", "÷ 1 core"], rows))
        self.emit()
        self.emit_failures(runs)
        self.emit_commands(runs, server=mock)

    # ---- header and main

    def header(self):
        cpu_model = "?"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        wrk_v = capture(["wrk", "-v"]).splitlines()[:1]
        versions = {
            "blast": capture([self.blast, "--version"]).strip(),
            "wrk": wrk_v[0].split(" Copyright")[0].strip() if wrk_v else "not installed",
            "oha": capture([self.oha, "--version"]).strip() if self.tool_available("oha") else "not installed",
            "h2load": capture(["h2load", "--version"]).strip() or "not installed",
            "nginx": capture([nginx_bin(), "-v"]).strip().replace("nginx version: ", ""),
            "async baseline": (capture([self.baseline_py, "-c",
                                        "import sys, aiohttp; print('Python', sys.version.split()[0], "
                                        "'aiohttp', aiohttp.__version__)"]).strip()
                               if self.tool_available("baseline") else "not available"),
        }
        git = capture(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = capture(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "cpu_model": cpu_model,
            "nproc": os.cpu_count(),
            "allowed_cpus": cpu_list(sorted(os.sched_getaffinity(0))),
            "client_cpus": self.client_pin,
            "server_cpu": self.server_cpu,
            "loadavg_start": os.getloadavg(),
            "versions": versions,
            "blast_commit": git + (" (with local changes)" if dirty else ""),
            "rounds": self.rounds,
            "duration_s": self.dur,
            "quick": self.quick,
            "argv": sys.argv,
        }
        self.data["meta"] = meta
        self.emit("# blast and its peers")
        self.emit()
        self.emit(f"- date: {meta['date']}")
        self.emit(f"- kernel: {meta['kernel']} (`uname -r`)")
        self.emit(f"- CPU: {cpu_model}; nproc {meta['nproc']}, allowed CPUs {meta['allowed_cpus']}; "
                  f"load average at start {meta['loadavg_start'][0]:.2f}")
        self.emit(f"- layout: nginx (1 worker) on CPU {self.server_cpu}, clients on CPU "
                  f"{self.client_pin} (`taskset -c {self.client_pin}`), all on 127.0.0.1")
        if self.shared_cpu:
            self.emit("- **warning: one CPU only: clients and nginx share it**")
        self.emit(f"- rounds: {self.rounds}, duration per run: {self.dur} s"
                  + (" (`--quick`)" if self.quick else ""))
        self.emit(f"- blast: {versions['blast']}, commit {meta['blast_commit'] or '?'}")
        for k in ("wrk", "oha", "h2load", "nginx", "async baseline"):
            self.emit(f"- {k}: {versions[k]}")
        self.emit("- CPU per request = (user + sys) / requests from `/usr/bin/time -f '%e %U %S %M'`; "
                  "peak RSS from the same (`%M`).")
        self.emit()

    def main(self) -> int:
        cases = self.args.cases
        cert = make_cert(self.tmp) if 11 in cases else None
        self.nginx = Nginx(self.tmp / "nginx", self.server_cpu, tls=cert)
        self.nginx.start()
        self.servers.append(self.nginx)
        self.header()
        t0 = time.monotonic()
        for c in cases:
            tc = time.monotonic()
            try:
                getattr(self, f"case{c}")()
                if c == 3 and "counts" not in self.args.skip:
                    self.counts()
            except (KeyboardInterrupt, Abort):
                raise
            except Exception as exc:  # one broken case must not lose the others
                import traceback
                traceback.print_exc()
                self.emit(f"## Case {c}: failed")
                self.emit()
                self.emit(f"```\n{type(exc).__name__}: {exc}\n```")
                self.emit()
                self.data["cases"].setdefault(str(c), {})["error"] = repr(exc)
            self.progress(f"case {c} took {time.monotonic() - tc:.0f} s")
        total = time.monotonic() - t0
        self.data["meta"]["total_s"] = round(total, 1)
        self.data["meta"]["loadavg_end"] = os.getloadavg()
        self.emit(f"_Total measuring time {total:.0f} s; load average at the end "
                  f"{os.getloadavg()[0]:.2f}. Raw figures: the JSON beside this file._")
        return 0

    def cleanup(self):
        if self.current is not None:
            stop_group(self.current, signal.SIGKILL)
        for s in reversed(self.servers):
            try:
                s.stop() if isinstance(s, Nginx) else stop_group(s)
            except Exception:
                pass
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


WRK_PIPELINE_LUA = """\
-- HTTP/1.1 pipelining for wrk: `wrk ... -s pipeline.lua URL -- DEPTH` (default 16).
init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
"""


# --------------------------------------------------------------------------------------
# parsing


def parse_time(path: Path) -> dict:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        wall, user, sys_, rss = lines[-1].split()
        return {"wall_s": float(wall), "user_s": float(user), "sys_s": float(sys_),
                "maxrss_kb": int(rss)}
    except (OSError, ValueError, IndexError):
        return {"wall_s": None, "user_s": None, "sys_s": None, "maxrss_kb": None}


def parse_tool(tool: str, run: dict, js: Path) -> dict:
    try:
        m = PARSERS[tool](run, js)
    except Exception as exc:  # keep the run, say why it has no figures
        m = {"error": f"cannot parse {tool} output: {type(exc).__name__}: {exc}"}
    n = m.get("requests")
    if n and run.get("user_s") is not None:
        m["cpu_us_per_req"] = (run["user_s"] + run["sys_s"]) / n * 1e6
    if run.get("maxrss_kb") is not None:
        m["rss_mb"] = run["maxrss_kb"] / 1024
    return m


def parse_blast(run, js):
    d = json.loads(Path(js).read_text())
    run["raw"] = {k: v for k, v in d.items() if k != "histograms"}
    lat = d.get("latency_us", {})
    m = {
        "rps": d["rps"],
        "requests": d["requests"]["completed"],
        "sent": d["requests"]["sent"],
        "ok": d["requests"]["ok"],
        "errors": d["requests"]["failed"],
        "p50_us": lat.get("p50"), "p90_us": lat.get("p90"), "p99_us": lat.get("p99"),
        "p999_us": lat.get("p999"), "mean_us": lat.get("mean"),
        "self_cpu_us_per_req": d.get("client_cpu_us_per_request"),
        "self_rss_mb": d.get("peak_rss_bytes", 0) / 2**20 if d.get("peak_rss_bytes") else None,
        "status": d.get("status"),
    }
    ol = d.get("open_loop")
    if ol:
        m["achieved_rps"] = ol.get("achieved_rps")
        m["target_rps"] = ol.get("target_rps")
        m["kept_up"] = ol.get("kept_up")
        m["send_lag_p99_us"] = (d.get("send_lag_us") or {}).get("p99", ol.get("send_lag_p99_us"))
    return m


def parse_wrk2(run, js):
    """wrk2 prints wrk's summary and, with --latency, an HdrHistogram percentile table."""
    m = parse_wrk(run, js)
    out = run["stdout"]
    for q in ("50", "90", "99", "99.9"):
        mm = re.search(rf"^\s+{re.escape(q)}\.?0*%\s+(\S+)", out, re.M)
        if mm:
            m[f"p{q.replace('.', '')}_us"] = to_us(mm.group(1)) or None
    return m


def parse_wrk(run, js):
    out = run["stdout"]
    m = {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in ", out).group(1)),
    }
    for q in ("50", "90", "99"):
        mm = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        # wrk sometimes prints "0.00us" for a percentile (seen for p99 under the pipelining
        # script, with p50 in milliseconds): that is no measurement, so it is left out.
        m[f"p{q}_us"] = (to_us(mm.group(1)) or None) if mm else None
    mm = re.search(r"Latency\s+(\S+)", out)
    m["mean_us"] = to_us(mm.group(1)) if mm else None
    errs = 0
    mm = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if mm:
        errs += sum(int(x) for x in mm.groups())
    mm = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if mm:
        errs += int(mm.group(1))
    m["errors"] = errs
    return m


def parse_h2load(run, js):
    out = run["stdout"]
    mm = re.search(r"finished in ([0-9.]+)(\w+), ([0-9.]+) req/s", out)
    m = {"rps": float(mm.group(3))}
    mm = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    m["requests"] = int(mm.group(3))
    m["errors"] = int(mm.group(5)) + int(mm.group(6)) + int(mm.group(7))
    mm = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    m["mean_us"] = to_us(mm.group(3)) if mm else None
    m["p50_us"] = m["p99_us"] = None  # h2load reports no percentiles
    return m


def parse_oha(run, js):
    d = json.loads(run["stdout"])
    run["raw"], run["stdout"] = d, "(see raw)"
    s = d["summary"]
    codes = d.get("statusCodeDistribution") or {}
    errors = d.get("errorDistribution") or {}
    pct = d.get("latencyPercentiles") or {}

    def us(key):
        v = pct.get(key)
        return v * 1e6 if v is not None else None

    done = sum(codes.values())
    m = {
        # oha's requestsPerSec also counts the requests aborted at the deadline: use the
        # responses it received over its total time, like the other tools.
        "rps": done / s["total"] if s.get("total") else s["requestsPerSec"],
        "oha_requests_per_sec": s["requestsPerSec"],
        "requests": done,
        "ok": sum(v for k, v in codes.items() if str(k).startswith("2")),
        "p50_us": us("p50"), "p90_us": us("p90"), "p99_us": us("p99"), "p999_us": us("p99.9"),
        "mean_us": s["average"] * 1e6 if s.get("average") is not None else None,
        "status": codes,
        "error_kinds": errors,
        # Requests cut off at the deadline are reported as errors by oha; they are not failures.
        "errors": sum(v for k, v in errors.items() if "deadline" not in k),
    }
    return m


def parse_baseline(run, js):
    d = json.loads(Path(js).read_text())
    run["raw"] = d
    lat = d.get("latency_us", {})
    return {
        "rps": d["rps"],
        "requests": d["requests"]["completed"],
        "ok": d["requests"]["ok"],
        "errors": d["requests"]["failed"],
        "p50_us": lat.get("p50"), "p90_us": lat.get("p90"), "p99_us": lat.get("p99"),
        "mean_us": lat.get("mean"),
        "self_cpu_us_per_req": d.get("client_cpu_us_per_request"),
    }


def parse_floor(run, js):
    n = int(re.search(r"^\w+: (\d+) responses$", run["stdout"], re.M).group(1))
    # It runs for the duration asked, after connecting: its wall time is the measure.
    return {"rps": n / run["wall_s"], "requests": n, "errors": 0,
            "p50_us": None, "p99_us": None, "mean_us": None}


PARSERS = {"blast": parse_blast, "wrk": parse_wrk, "wrk2": parse_wrk2, "h2load": parse_h2load, "oha": parse_oha,
           "baseline": parse_baseline, "floor-epoll": parse_floor, "floor-uring": parse_floor}

SUMMARY_KEYS = ("rps", "cpu_us_per_req", "rss_mb", "p50_us", "p90_us", "p99_us", "p999_us",
                "mean_us", "achieved_rps", "send_lag_p99_us", "self_cpu_us_per_req", "self_rss_mb",
                "requests")


def summarize(runs: list[dict]) -> dict:
    ms = [r.get("metrics", {}) for r in runs]
    s = {k: median([m.get(k) for m in ms]) for k in SUMMARY_KEYS}
    rps = [m.get("rps") for m in ms if m.get("rps") is not None]
    s["rps_spread_pct"] = ((max(rps) - min(rps)) / 2 / statistics.median(rps) * 100) \
        if len(rps) > 1 and statistics.median(rps) else None
    s["rounds"] = len(runs)
    return s


# Case 10: perf's sampling rate, and the buckets a sample's call stack may fall in, in the
# order they are tried: the first row whose kernel functions appear in the stack takes it.
PERF_HZ = 4999
PERF_BUCKETS = {
    "softirq": "softirq: mostly nginx's TCP receive of the request and its wake-up, run by the send",
    "sched": "scheduler: blocking and being woken",
    "epoll_ctl": "`epoll_ctl`",
    "epoll_wait": "`epoll_wait` / `epoll_pwait2`",
    "send": "the send (`sendto` / `write`): TCP/IP transmit",
    "recv": "the receive (`recvfrom` / `read`)",
    "kernel": "other kernel: syscall entry and exit, interrupts, faults",
    "user": "user space (the tool, libc, vDSO)",
}
PERF_MATCH = (
    ("softirq", ("handle_softirqs", "__do_softirq")),
    ("sched", ("schedule", "__schedule")),
    ("epoll_ctl", ("__x64_sys_epoll_ctl",)),
    ("epoll_wait", ("do_epoll_wait",)),
    ("send", ("__x64_sys_sendto", "__x64_sys_write", "ksys_write", "__x64_sys_sendmsg")),
    ("recv", ("__x64_sys_recvfrom", "__x64_sys_read", "ksys_read", "__x64_sys_recvmsg")),
)


def cpu_buckets(script: str) -> dict[str, float]:
    """Sample periods (ns of CPU) per bucket, from `perf script -F period,ip,sym,dso`: one
    sample per blank-line-separated block, the period on its first line, then the call
    stack, leaf first, one `ADDRESS SYMBOL (DSO)` frame per line (a symbol may hold spaces)."""
    out = dict.fromkeys(PERF_BUCKETS, 0.0)
    for block in script.split("\n\n"):
        lines = [ln.split() for ln in block.strip().splitlines()]
        if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
            continue
        period = int(lines[0][0])
        if "kernel" not in lines[1][-1]:
            out["user"] += period
            continue
        words = {w for frame in lines[1:] for w in frame[1:-1]}
        out[next((b for b, names in PERF_MATCH if words.intersection(names)), "kernel")] += period
    return out


def paired_ratios(runs: dict[str, list[dict]], value) -> dict[str, float]:
    """Per tool but wrk: the median over rounds of `value(run)` divided by wrk's in the same
    round (rounds where either has no figure are left out; empty with one round)."""
    wrk = {r["round"]: value(r) for r in runs.get("wrk", []) if value(r)}
    out = {}
    for t, rs in runs.items():
        if t == "wrk":
            continue
        ratios = [value(r) / wrk[r["round"]] for r in rs if value(r) and r["round"] in wrk]
        if len(ratios) > 1:
            out[t] = statistics.median(ratios)
    return out


def pair_ratio(runs: dict[str, list[dict]], a: str, b: str, value) -> float | None:
    """The median over rounds of `value` of tool a's run divided by tool b's of the same round
    (rounds where either has no figure are left out)."""
    bs = {r["round"]: value(r) for r in runs.get(b, []) if value(r)}
    ratios = [value(r) / bs[r["round"]] for r in runs.get(a, []) if value(r) and r["round"] in bs]
    return statistics.median(ratios) if ratios else None


def paired_cpu_ratios(runs: dict[str, list[dict]]) -> dict[str, float]:
    """`paired_ratios` of the CPU per request."""
    return paired_ratios(runs, lambda r: r.get("metrics", {}).get("cpu_us_per_req"))


def variant_name(t: str) -> str:
    """A tool, or blast with the options case 11 adds (its `kinds`)."""
    return {"blast-slack": "blast --slack 500us",
            "blast-full": "blast --no-tls-resume"}.get(t, tool_name(t))


def tool_name(t, pipeline: int = 1) -> str:
    name = {"baseline": "async baseline"}.get(t, str(t))
    return name + (f" (pipeline {pipeline})" if pipeline > 1 else "")


def fmt_rps(s: dict) -> str:
    if s["rps"] is None:
        return "failed (see below)"
    txt = fmt_int(s["rps"])
    if s.get("rps_spread_pct") is not None:
        txt += f" ±{s['rps_spread_pct']:.0f}%"
    return txt


def fmt_p50(s: dict) -> str:
    if s["p50_us"] is None and s.get("mean_us") is not None:
        return f"— (mean {fmt_us(s['mean_us'])})"
    return fmt_us(s["p50_us"])


def count_check(runs: list[dict], in_flight: int) -> str:
    """nginx's count against the tool's, over the rounds: ✓, +N (in flight at stop) or ✗."""
    diffs = []
    for r in runs:
        n = r.get("metrics", {}).get("requests")
        if r.get("nginx_requests") is None or n is None:
            return "—"
        diffs.append(r["nginx_requests"] - n)
    if not diffs:
        return "—"
    if all(d == 0 for d in diffs):
        return "✓"
    worst = max(diffs, key=abs)
    if all(0 <= d <= in_flight for d in diffs):
        return f"+{worst}"
    return f"✗ {worst:+d}"


# --------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, 2 s runs, smaller counts")
    p.add_argument("--rounds", type=int, default=None, help="rounds per case (default 3; quick 1)")
    p.add_argument("--duration", type=int, default=None,
                   help="seconds per timed run (default 5; quick 2)")
    p.add_argument("--out", default=str(ROOT / "target" / "bench-peers.md"),
                   help="Markdown output (default target/bench-peers.md); JSON beside it")
    p.add_argument("--cases", default=",".join(map(str, ALL_CASES)),
                   help="comma-separated subset of the cases, e.g. 1,3,5 (default all)")
    p.add_argument("--skip", default="", help="'counts' skips the exact-count table")
    p.add_argument("--blast", default=str(ROOT / "target" / "release" / "blast"))
    p.add_argument("--floor", default=str(ROOT / "target" / "release" / "examples" / "floor"),
                   help="examples/floor.rs, built (case 9; skipped where missing)")
    p.add_argument("--oha", default=None, help="oha binary (default: PATH or ~/.cargo/bin/oha)")
    p.add_argument("--baseline-python", default=None,
                   help="Python with aiohttp for scripts/async_baseline.py (omit: no baseline)")
    p.add_argument("--mock-cmd", default=None,
                   help="command of the mock server (default: 'BLAST mock')")
    p.add_argument("--no-mock", action="store_true", help="skip the cases that need blast mock")
    p.add_argument("--rate", type=int, default=20000, help="case 4's rate (default 20000)")
    p.add_argument("--wrk2", default=None,
                   help="wrk2 binary for case 4 (default: PATH, then ../shared/tools/wrk2)")
    p.add_argument("--proxy-rate", type=int, default=2000, help="case 7's rate (default 2000)")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between runs (default 0.5)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (nginx, raw outputs)")
    a = p.parse_args(argv)
    try:
        a.cases = [int(c) for c in a.cases.split(",") if c.strip()]
        assert all(c in ALL_CASES for c in a.cases)
    except (ValueError, AssertionError):
        p.error(f"--cases: a comma-separated subset of {ALL_CASES}")
    if a.rounds is not None and a.rounds < 1:
        p.error("--rounds must be at least 1")
    if a.duration is not None and a.duration < 1:
        p.error("--duration must be at least 1")
    a.skip = set(x for x in a.skip.split(",") if x)
    return a


def main() -> int:
    args = parse_args()
    if not os.access(args.blast, os.X_OK):
        print(f"bench_peers: no blast binary at {args.blast} (cargo build --release)", file=sys.stderr)
        return 2
    for tool in ("taskset", "/usr/bin/time"):
        if not shutil.which(tool):
            print(f"bench_peers: {tool} is missing", file=sys.stderr)
            return 2
    if not os.path.exists(nginx_bin()):
        print("bench_peers: nginx is missing", file=sys.stderr)
        return 2
    # 1000 connections per client plus nginx's side: raise the open-file limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))

    def on_term(signum, frame):
        raise Abort(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    bench = Bench(args)
    rc = 0
    try:
        rc = bench.main()
    except (KeyboardInterrupt, Abort) as exc:
        print(f"\nbench_peers: interrupted ({str(exc) or 'Ctrl-C'}); writing what was measured",
              file=sys.stderr)
        bench.emit("\n_Interrupted: the run is incomplete._")
        rc = 130
    finally:
        bench.cleanup()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(bench.md) + "\n")
        out.with_suffix(".json").write_text(json.dumps(bench.data, indent=1, default=str) + "\n")
        print(f"bench_peers: wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

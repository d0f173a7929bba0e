//! End-to-end tests of blast's LLM workloads: request bodies for the four APIs, stream
//! decoding (Ollama NDJSON, OpenAI SSE) under every framing, token counts, TTFT / ITL / TPOT,
//! goodput, the built-in mock and demo, and bad LLM input.
//!
//! blast runs against `FakeLlm`, a small threaded server written here (independent of
//! `blast mock`), which streams a configurable answer and records every request it received.
//! Every run is bounded by `--requests` and `--timeout`, and by the harness's hard timeout.

mod common;

use common::doc::*;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{blast, blast_json, closed_port, run_blast, Mock, SeenRequest as Received, TempFile};

const MS: fn(u64) -> Duration = Duration::from_millis;

// ---------------------------------------------------------------------------------------
// The fake LLM server: what it streams
// ---------------------------------------------------------------------------------------

/// The four APIs. The fake server tells them apart by the request path (blast uses the
/// API's usual path for a URL without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    OllamaGenerate,
    OllamaChat,
    OpenaiChat,
    OpenaiCompletions,
}

use Dialect::{OllamaChat, OllamaGenerate, OpenaiChat, OpenaiCompletions};

impl Dialect {
    fn from_path(path: &str) -> Option<Dialect> {
        [OllamaGenerate, OllamaChat, OpenaiChat, OpenaiCompletions]
            .into_iter()
            .find(|d| d.path() == path)
    }

    fn path(self) -> &'static str {
        match self {
            OllamaGenerate => "/api/generate",
            OllamaChat => "/api/chat",
            OpenaiChat => "/v1/chat/completions",
            OpenaiCompletions => "/v1/completions",
        }
    }

    /// blast's `--api` value.
    fn api(self) -> &'static str {
        match self {
            OllamaGenerate => "ollama-generate",
            OllamaChat => "ollama-chat",
            OpenaiChat => "openai-chat",
            OpenaiCompletions => "openai-completions",
        }
    }

    fn is_ollama(self) -> bool {
        matches!(self, OllamaGenerate | OllamaChat)
    }

    fn is_chat(self) -> bool {
        matches!(self, OllamaChat | OpenaiChat)
    }
}

/// How the events of a streamed answer are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Chunked, one event per chunk, each chunk its own write.
    PerEvent,
    /// Chunked, every event cut in two chunks, written with a short pause between them.
    Split,
    /// Chunked, three token events per chunk (the ending packed into the last one).
    Packed,
    /// No length at all: one write per event, then `Connection: close` ends the body.
    CloseDelimited,
}

/// Pause between the two halves of a split event: long enough that blast reads them apart.
const SPLIT_PAUSE: Duration = Duration::from_millis(3);

/// How a streamed answer goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// An error object after half the tokens, and nothing after it (as Ollama does).
    ErrorEvent,
    /// The body ends after the tokens: no final object, finish chunk, usage or `[DONE]`.
    NoEnding,
}

/// What the fake server answers to every generation request.
#[derive(Clone, Debug)]
struct Answer {
    tokens: u32,
    /// From reading the request to the first token (the response head goes out at once).
    ttft: Duration,
    /// Between token events (steps of an absolute schedule: token i at ttft + i x gap).
    gap: Duration,
    framing: Framing,
    /// OpenAI: a chunk with `usage.completion_tokens` = tokens.
    usage: bool,
    /// OpenAI: a chunk with `finish_reason: "stop"` after the tokens.
    finish_reason: bool,
    /// OpenAI: `data: [DONE]` at the end.
    done_marker: bool,
    fault: Fault,
}

impl Answer {
    /// `tokens` token events at once, chunked one per chunk, and a proper ending (OpenAI:
    /// finish chunk and `[DONE]`, no usage chunk).
    fn new(tokens: u32) -> Answer {
        Answer {
            tokens,
            ttft: Duration::ZERO,
            gap: Duration::ZERO,
            framing: Framing::PerEvent,
            usage: false,
            finish_reason: true,
            done_marker: true,
            fault: Fault::None,
        }
    }
    fn timing(self, ttft: Duration, gap: Duration) -> Answer {
        Answer { ttft, gap, ..self }
    }
    fn framing(self, framing: Framing) -> Answer {
        Answer { framing, ..self }
    }
    fn usage(self) -> Answer {
        Answer {
            usage: true,
            ..self
        }
    }
    fn without_finish_reason(self) -> Answer {
        Answer {
            finish_reason: false,
            ..self
        }
    }
    fn without_done_marker(self) -> Answer {
        Answer {
            done_marker: false,
            ..self
        }
    }
    fn fault(self, fault: Fault) -> Answer {
        Answer { fault, ..self }
    }

    /// Ollama's durations, in nanoseconds: load 1 ms, prompt evaluation the TTFT plus 2 ms,
    /// evaluation one gap per token, and 5 ms of queueing that only the total includes.
    fn ollama_timings(&self) -> Value {
        let ns = |d: Duration| d.as_nanos() as u64;
        let eval = ns(self.gap * self.tokens).max(1);
        json!({
            "total_duration": ns(self.ttft) + eval + 8_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": PROMPT_TOKENS,
            "prompt_eval_duration": ns(self.ttft) + 2_000_000,
            "eval_count": self.tokens,
            "eval_duration": eval,
        })
    }
}

impl Answer {
    /// OpenAI's token counts.
    fn usage_json(&self) -> Value {
        let total = PROMPT_TOKENS + self.tokens as u64;
        json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": self.tokens,
               "total_tokens": total})
    }
}

/// Prompt tokens, as the fake server reports them.
const PROMPT_TOKENS: u64 = 11;

fn token_text(i: u32) -> String {
    format!("tok{i} ")
}

fn ndjson(v: Value) -> String {
    format!("{v}\n")
}

fn sse(v: Value) -> String {
    format!("data: {v}\n\n")
}

/// An OpenAI streaming chunk with one choice.
fn openai_chunk(object: &str, choice: Value) -> String {
    sse(json!({"id": "x-1", "object": object, "choices": [choice]}))
}

/// Merge the fields of `extra` (an object) into `v` (an object).
fn with(mut v: Value, extra: Value) -> Value {
    let (Value::Object(o), Value::Object(e)) = (&mut v, extra) else {
        panic!("with() merges objects");
    };
    o.extend(e);
    v
}

impl Dialect {
    /// Sent right after the response head, before the first token: OpenAI chat's role-only
    /// chunk, whose empty content is not a token.
    fn preamble(self) -> Option<String> {
        let role = json!({"index": 0, "delta": {"role": "assistant", "content": ""}});
        (self == OpenaiChat).then(|| openai_chunk("chat.completion.chunk", role))
    }

    /// The `i`-th token event.
    fn token_event(self, i: u32) -> String {
        let t = token_text(i);
        match self {
            OllamaGenerate => ndjson(json!({"model": "fake", "response": t, "done": false})),
            OllamaChat => {
                let message = json!({"role": "assistant", "content": t});
                ndjson(json!({"model": "fake", "message": message, "done": false}))
            }
            OpenaiChat => openai_chunk(
                "chat.completion.chunk",
                json!({"index": 0, "delta": {"content": t}, "finish_reason": null}),
            ),
            OpenaiCompletions => openai_chunk(
                "text_completion",
                json!({"index": 0, "text": t, "finish_reason": null}),
            ),
        }
    }

    /// What follows the tokens of a complete answer.
    fn ending(self, a: &Answer) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            OllamaGenerate => out.push(ndjson(with(
                json!({"model": "fake", "created_at": "2024-01-01T00:00:01Z", "response": "",
                       "done": true, "done_reason": "stop", "context": [1, 2, 3]}),
                a.ollama_timings(),
            ))),
            OllamaChat => out.push(ndjson(with(
                json!({"model": "fake", "created_at": "2024-01-01T00:00:01Z",
                       "message": {"role": "assistant", "content": ""},
                       "done": true, "done_reason": "stop"}),
                a.ollama_timings(),
            ))),
            OpenaiChat | OpenaiCompletions => {
                if a.finish_reason {
                    out.push(match self {
                        OpenaiChat => openai_chunk(
                            "chat.completion.chunk",
                            json!({"index": 0, "delta": {}, "finish_reason": "stop"}),
                        ),
                        _ => openai_chunk(
                            "text_completion",
                            json!({"index": 0, "text": "", "finish_reason": "stop"}),
                        ),
                    });
                }
                if a.usage {
                    out.push(sse(
                        json!({"id": "x-1", "choices": [], "usage": a.usage_json()}),
                    ));
                }
                if a.done_marker {
                    out.push("data: [DONE]\n\n".to_string());
                }
            }
        }
        out
    }

    fn error_event(self) -> String {
        if self.is_ollama() {
            ndjson(json!({"error": "boom"}))
        } else {
            sse(json!({"error": {"message": "boom", "type": "server_error"}}))
        }
    }

    /// A whole (non-streamed) answer.
    fn whole_body(self, a: &Answer) -> String {
        let text: String = (0..a.tokens).map(token_text).collect();
        let usage = a.usage_json();
        let v = match self {
            OllamaGenerate => with(
                json!({"model": "fake", "response": text, "done": true, "done_reason": "stop"}),
                a.ollama_timings(),
            ),
            OllamaChat => with(
                json!({"model": "fake", "message": {"role": "assistant", "content": text},
                       "done": true, "done_reason": "stop"}),
                a.ollama_timings(),
            ),
            OpenaiChat => json!({"id": "chatcmpl-1", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": usage}),
            OpenaiCompletions => json!({"id": "cmpl-1", "object": "text_completion",
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                "usage": usage}),
        };
        v.to_string()
    }

    /// The events of a streamed answer after the preamble, in steps: the first step goes
    /// out after the TTFT, each later one after a gap; the events of a step go out at once.
    fn steps(self, a: &Answer) -> Vec<Vec<String>> {
        let (sent, ending) = match a.fault {
            Fault::None => (a.tokens, self.ending(a)),
            Fault::ErrorEvent => (a.tokens / 2, vec![self.error_event()]),
            Fault::NoEnding => (a.tokens, Vec::new()),
        };
        let tokens: Vec<String> = (0..sent).map(|i| self.token_event(i)).collect();
        let per_step = if a.framing == Framing::Packed { 3 } else { 1 };
        let mut steps: Vec<Vec<String>> = tokens.chunks(per_step).map(<[_]>::to_vec).collect();
        match steps.last_mut() {
            Some(last) => last.extend(ending),
            None => steps.push(ending),
        }
        steps
    }
}

// ---------------------------------------------------------------------------------------
// The fake LLM server: serving
// ---------------------------------------------------------------------------------------

/// What this file reads from a request the fake server received (`common::SeenRequest`).
impl Received {
    /// The body as JSON; fails the test if it is not valid JSON.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The prompt, wherever the API puts it.
    fn prompt(&self) -> String {
        let b = self.json();
        let p = if Dialect::from_path(&self.path).is_some_and(Dialect::is_chat) {
            &b["messages"][0]["content"]
        } else {
            &b["prompt"]
        };
        p.as_str()
            .unwrap_or_else(|| panic!("no prompt string in {b}"))
            .to_string()
    }
}

/// A fake LLM server on 127.0.0.1:0, one thread per connection, keep-alive unless the
/// framing is close-delimited. Stops (and joins its threads) when dropped.
struct FakeLlm {
    received: Arc<Mutex<Vec<Received>>>,
    acceptor: common::Acceptor,
}

/// How often blocked server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

impl FakeLlm {
    fn start(answer: Answer) -> FakeLlm {
        let received = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let received = received.clone();
            common::Acceptor::start(move |stream, stop| {
                let _ = serve(stream, &answer, &received, stop);
            })
        };
        FakeLlm { received, acceptor }
    }

    /// `http://127.0.0.1:PORT`, without a path: blast picks the API's.
    fn url(&self) -> String {
        format!("http://{}", self.acceptor.addr())
    }

    /// Every request received so far, in order (call it after blast has exited).
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    answer: &Answer,
    received: &Mutex<Vec<Received>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    loop {
        while let Some((req, used)) = common::parse_request(&buf)? {
            buf.drain(..used);
            received.lock().unwrap().push(req.clone());
            if !respond(&mut stream, answer, &req)? {
                // Close-delimited: FIN ends the body; then wait for the client to close.
                stream.shutdown(Shutdown::Write)?;
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && common::read_more(&mut stream, &mut buf, stop)? {
                }
                return Ok(());
            }
        }
        if !common::read_more(&mut stream, &mut buf, stop)? {
            return Ok(());
        }
    }
}

/// Writes the response body's pieces in the answer's framing.
struct BodyWriter<'a> {
    stream: &'a mut TcpStream,
    chunked: bool,
}

impl BodyWriter<'_> {
    /// One write: a chunk, or raw bytes when close-delimited.
    fn piece(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.chunked {
            return self.stream.write_all(data);
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out)
    }

    fn end(&mut self) -> io::Result<()> {
        if self.chunked {
            self.stream.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    }
}

/// Answers one request; false when the connection must close after it.
fn respond(stream: &mut TcpStream, a: &Answer, req: &Received) -> io::Result<bool> {
    let received_at = Instant::now();
    let Some(dialect) = Dialect::from_path(&req.path) else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")?;
        return Ok(true);
    };
    let streaming = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|b| b["stream"].as_bool())
        .unwrap_or(true);
    if !streaming {
        thread::sleep(a.ttft);
        let body = dialect.whole_body(a);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(format!("{head}{body}").as_bytes())?;
        return Ok(true);
    }
    let close = a.framing == Framing::CloseDelimited;
    let ctype = match dialect.is_ollama() {
        true => "application/x-ndjson",
        false => "text/event-stream",
    };
    let framing = match close {
        true => "Connection: close",
        false => "Transfer-Encoding: chunked",
    };
    stream.write_all(
        format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n").as_bytes(),
    )?;
    let mut w = BodyWriter {
        stream,
        chunked: !close,
    };
    if let Some(p) = dialect.preamble() {
        w.piece(p.as_bytes())?;
    }
    // On an absolute schedule, so that one late write does not delay all the later ones.
    for (i, step) in dialect.steps(a).iter().enumerate() {
        sleep_until(received_at + a.ttft + a.gap * i as u32);
        match a.framing {
            Framing::PerEvent | Framing::CloseDelimited => {
                for ev in step {
                    w.piece(ev.as_bytes())?;
                }
            }
            Framing::Split => {
                for ev in step {
                    let (x, y) = ev.as_bytes().split_at(ev.len() / 2);
                    w.piece(x)?;
                    thread::sleep(SPLIT_PAUSE);
                    w.piece(y)?;
                }
            }
            Framing::Packed => w.piece(step.concat().as_bytes())?,
        }
    }
    w.end()?;
    Ok(!close)
}

fn sleep_until(t: Instant) {
    thread::sleep(t.saturating_duration_since(Instant::now()));
}

// ---------------------------------------------------------------------------------------
// Running blast and reading its result
// ---------------------------------------------------------------------------------------

/// blast with `args` and a 5 s per-request timeout; its output and result document.
fn run(args: &[&str]) -> (Output, Value) {
    let mut all = args.to_vec();
    all.extend(["--timeout", "5s"]);
    blast_json(&all)
}

/// blast `--api <dialect> --requests N --conns C` against `url`.
fn run_api(dialect: Dialect, requests: u64, conns: usize, url: &str, extra: &[&str]) -> Value {
    let (n, c) = (requests.to_string(), conns.to_string());
    let mut args = vec!["--api", dialect.api(), "--requests", &n, "--conns", &c];
    args.extend(extra);
    args.push(url);
    let (out, doc) = run(&args);
    let code = if num(&doc, "requests.ok") > 0 { 0 } else { 1 };
    assert_exit(&out, code);
    doc
}

/// Exactly `n` requests sent, completed and 2xx, and no error of any kind.
fn assert_all_ok(doc: &Value, n: u64) {
    for key in ["sent", "completed", "ok"] {
        assert_eq!(
            num(doc, &format!("requests.{key}")),
            n,
            "requests.{key}:\n{doc:#}"
        );
    }
    assert_eq!(num(doc, "status.200"), n, "status.200");
    assert_no_errors(doc);
}

/// All `n` requests answered 200 and then failed inside the stream with `kind`.
fn assert_all_failed_in_stream(doc: &Value, n: u64, kind: &str) {
    assert_eq!(
        num(doc, &format!("errors.{kind}")),
        n,
        "errors.{kind}:\n{doc:#}"
    );
    assert_eq!(num(doc, "requests.failed"), n, "requests.failed");
    assert_eq!(num(doc, "requests.ok"), 0, "requests.ok");
    assert_eq!(num(doc, "requests.sent"), n, "requests.sent");
    assert_eq!(
        num(doc, "requests.completed"),
        0,
        "a failed stream is not completed"
    );
    assert_eq!(
        num(doc, "status.200"),
        n,
        "status.200 counts failed streams too"
    );
}

/// Exactly `tokens` output tokens, counted as `source` says.
fn assert_tokens(doc: &Value, tokens: u64, source: &str) {
    assert_eq!(num(doc, "tokens.output"), tokens, "tokens.output:\n{doc:#}");
    assert_eq!(text(doc, "tokens.source"), source, "tokens.source");
}

// ---------------------------------------------------------------------------------------
// 1-4. Token counts, framings, endings and faults
// ---------------------------------------------------------------------------------------

#[test]
fn ollama_generate_counts_server_tokens_and_sends_valid_bodies() {
    let llm = FakeLlm::start(Answer::new(7));
    let doc = run_api(OllamaGenerate, 20, 4, &llm.url(), &[]);
    assert_all_ok(&doc, 20);
    assert_tokens(&doc, 140, "server");
    assert_eq!(
        num(&doc, "tokens.prompt"),
        20 * PROMPT_TOKENS,
        "tokens.prompt"
    );
    assert_eq!(num(&doc, "done_reasons.stop"), 20, "done_reasons.stop");

    let got = llm.received();
    assert_eq!(got.len(), 20, "POSTs the server saw");
    for r in &got {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/generate")
        );
        let b = r.json();
        assert_eq!(b["model"], json!("llama3.2"), "{b}");
        assert!(b["prompt"].as_str().is_some_and(|p| !p.is_empty()), "{b}");
        assert_eq!(b["stream"], json!(true), "{b}");
    }
}

#[test]
fn openai_tokens_are_counted_from_events_without_a_usage_chunk() {
    for dialect in [OpenaiChat, OpenaiCompletions] {
        let llm = FakeLlm::start(Answer::new(6));
        let doc = run_api(dialect, 20, 4, &llm.url(), &[]);
        assert_all_ok(&doc, 20);
        assert_tokens(&doc, 120, "events");
    }
}

#[test]
fn openai_tokens_come_from_the_usage_chunk_when_there_is_one() {
    let llm = FakeLlm::start(Answer::new(6).usage());
    let doc = run_api(OpenaiChat, 20, 4, &llm.url(), &[]);
    assert_all_ok(&doc, 20);
    assert_tokens(&doc, 120, "server");
    assert_eq!(
        num(&doc, "tokens.prompt"),
        20 * PROMPT_TOKENS,
        "tokens.prompt"
    );
    assert_eq!(num(&doc, "done_reasons.stop"), 20, "done_reasons.stop");
}

/// 20 requests of 7 tokens in `framing`: all complete, every token counted (by the server
/// for Ollama, by counting events for OpenAI, which sends no usage chunk here).
fn check_framing(framing: Framing) {
    for dialect in [OllamaChat, OpenaiChat] {
        let llm = FakeLlm::start(Answer::new(7).framing(framing));
        let doc = run_api(dialect, 20, 4, &llm.url(), &[]);
        assert_all_ok(&doc, 20);
        let source = if dialect.is_ollama() {
            "server"
        } else {
            "events"
        };
        assert_tokens(&doc, 140, source);
    }
}

#[test]
fn events_split_across_chunks_are_reassembled() {
    check_framing(Framing::Split);
}

#[test]
fn several_events_in_one_chunk_are_all_counted() {
    check_framing(Framing::Packed);
}

#[test]
fn close_delimited_streams_are_complete() {
    check_framing(Framing::CloseDelimited);
}

#[test]
fn openai_stream_with_finish_reason_but_no_done_marker_is_complete() {
    // Llama Stack ends its streams this way.
    for dialect in [OpenaiChat, OpenaiCompletions] {
        let llm = FakeLlm::start(Answer::new(5).without_done_marker());
        let doc = run_api(dialect, 10, 2, &llm.url(), &[]);
        assert_all_ok(&doc, 10);
        assert_tokens(&doc, 50, "events");
    }
}

#[test]
fn openai_stream_without_done_marker_or_finish_reason_is_truncated() {
    let answer = Answer::new(5).without_done_marker().without_finish_reason();
    let llm = FakeLlm::start(answer);
    let doc = run_api(OpenaiChat, 10, 2, &llm.url(), &[]);
    assert_all_failed_in_stream(&doc, 10, "truncated");
}

#[test]
fn streams_cut_before_their_ending_are_truncated() {
    for dialect in [OllamaGenerate, OpenaiCompletions] {
        let llm = FakeLlm::start(Answer::new(5).fault(Fault::NoEnding));
        let doc = run_api(dialect, 10, 2, &llm.url(), &[]);
        assert_all_failed_in_stream(&doc, 10, "truncated");
    }
}

#[test]
fn an_error_object_mid_stream_is_a_stream_error() {
    for dialect in [OllamaGenerate, OpenaiChat] {
        let llm = FakeLlm::start(Answer::new(6).fault(Fault::ErrorEvent));
        let doc = run_api(dialect, 10, 2, &llm.url(), &[]);
        assert_all_failed_in_stream(&doc, 10, "stream");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Timing
// ---------------------------------------------------------------------------------------

fn assert_p50_near(doc: &Value, key: &str, expected_us: u64) {
    let p50 = num(doc, &format!("{key}.p50"));
    let tolerance = expected_us / 10;
    assert!(
        p50.abs_diff(expected_us) <= tolerance,
        "{key}.p50 = {p50} us, expected {expected_us} us +/- 10%:\n{:#}",
        at(doc, key)
    );
}

#[test]
fn ttft_itl_and_tpot_match_the_server_pacing() {
    // Every token is its own chunk, written 20 ms after the previous one. OpenAI chat also
    // sends its role-only chunk at once, which must not count as the first token.
    for dialect in [OllamaGenerate, OpenaiChat] {
        let answer = Answer::new(10).timing(MS(100), MS(20));
        let llm = FakeLlm::start(answer);
        let doc = run_api(dialect, 8, 2, &llm.url(), &[]);
        assert_all_ok(&doc, 8);
        assert_eq!(num(&doc, "tokens.output"), 80, "tokens.output");
        assert_p50_near(&doc, "ttft_us", 100_000);
        assert_p50_near(&doc, "itl_us", 20_000);
        assert_p50_near(&doc, "tpot_us", 20_000);
        assert_eq!(
            num(&doc, "itl_us.count"),
            8 * 9,
            "one gap per pair of tokens"
        );
    }
}

/// `key.p50` equals `expected` (a figure the server reported) to the histograms' precision.
fn assert_p50_exact(doc: &Value, key: &str, expected: u64) {
    let p50 = num(doc, &format!("{key}.p50"));
    assert!(
        p50.abs_diff(expected) <= expected / 500,
        "{key}.p50 = {p50}, the server said {expected}:\n{:#}",
        at(doc, key)
    );
}

#[test]
fn ollama_server_timings_are_reported() {
    // The final object says: load 1 ms, prompt eval 52 ms, eval 10 x 30 ms, total 358 ms.
    let llm = FakeLlm::start(Answer::new(10).timing(MS(50), MS(30)));
    let doc = run_api(OllamaGenerate, 2, 1, &llm.url(), &[]);
    assert_all_ok(&doc, 2);
    assert_p50_exact(&doc, "server_load_us", 1_000);
    assert_p50_exact(&doc, "server_prompt_eval_us", 52_000);
    assert_p50_exact(&doc, "server_eval_us", 300_000);
    assert_p50_exact(&doc, "server_queue_us", 5_000);
    let per_s = at(&doc, "tokens.server_per_s").as_f64().expect("a number");
    assert!(
        (per_s - 10.0 / 0.3).abs() < 0.01,
        "tokens.server_per_s = {per_s}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Request bodies
// ---------------------------------------------------------------------------------------

/// What blast sent for `dialect` with a prompt file, `--model x --max-tokens 5`, streaming
/// and not, and with `--prompts short,medium`.
fn check_bodies(dialect: Dialect) {
    let llm = FakeLlm::start(Answer::new(4));
    let prompts = TempFile::with_contents(
        "prompts.txt",
        b"first prompt\r\n\r\n  second prompt  \nthird prompt",
    );
    let file = prompts.path_str();
    let common = ["--model", "x", "--max-tokens", "5", "--prompt-file", file];

    // Streaming, one connection: the prompts in file order, in rotation.
    let doc = run_api(dialect, 5, 1, &llm.url(), &common);
    assert_all_ok(&doc, 5);
    // Not streaming: the same bodies with stream false, and a whole answer back.
    let doc = run_api(
        dialect,
        2,
        1,
        &llm.url(),
        &[&common[..], &["--no-stream"]].concat(),
    );
    assert_all_ok(&doc, 2);
    assert_tokens(&doc, 8, "server");

    let got = llm.received();
    assert_eq!(got.len(), 7);
    for (i, r) in got.iter().enumerate() {
        let streaming = i < 5;
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, dialect.path(), "default path for {}", dialect.api());
        let b = r.json();
        assert_eq!(b["model"], json!("x"), "{b}");
        assert_eq!(b["stream"], json!(streaming), "{b}");
        if dialect.is_chat() {
            assert_eq!(b["messages"][0]["role"], json!("user"), "{b}");
            assert!(b.get("prompt").is_none(), "{b}");
        } else {
            assert!(b.get("messages").is_none(), "{b}");
        }
        if dialect.is_ollama() {
            assert_eq!(b["options"]["num_predict"], json!(5), "{b}");
            assert!(b.get("max_tokens").is_none(), "{b}");
        } else {
            assert_eq!(b["max_tokens"], json!(5), "{b}");
            assert!(b.get("options").is_none(), "{b}");
            if !streaming {
                assert!(b.get("stream_options").is_none(), "not streaming: {b}");
            }
        }
    }
    let sent: Vec<String> = got[..5].iter().map(Received::prompt).collect();
    assert_eq!(
        sent,
        [
            "first prompt",
            "second prompt",
            "third prompt",
            "first prompt",
            "second prompt"
        ]
    );

    // Built-in prompt sets: a short and a clearly longer prompt.
    let llm = FakeLlm::start(Answer::new(4));
    let doc = run_api(dialect, 4, 1, &llm.url(), &["--prompts", "short,medium"]);
    assert_all_ok(&doc, 4);
    let lens: Vec<usize> = llm.received().iter().map(|r| r.prompt().len()).collect();
    let (shortest, longest) = (*lens.iter().min().unwrap(), *lens.iter().max().unwrap());
    assert!(
        shortest < 100 && longest > 3 * shortest && longest > 200,
        "prompt lengths with short,medium: {lens:?}"
    );
}

#[test]
fn ollama_generate_bodies() {
    check_bodies(OllamaGenerate);
}

#[test]
fn ollama_chat_bodies() {
    check_bodies(OllamaChat);
}

#[test]
fn openai_chat_bodies() {
    check_bodies(OpenaiChat);
}

#[test]
fn openai_completions_bodies() {
    check_bodies(OpenaiCompletions);
}

// ---------------------------------------------------------------------------------------
// 7. Goodput
// ---------------------------------------------------------------------------------------

#[test]
fn goodput_counts_requests_within_the_ttft_objective() {
    let llm = FakeLlm::start(Answer::new(3).timing(MS(100), Duration::ZERO));
    let doc = run_api(OllamaGenerate, 4, 2, &llm.url(), &["--slo", "ttft=50ms"]);
    assert_all_ok(&doc, 4);
    assert_eq!(num(&doc, "goodput.good"), 0, "TTFT 100 ms misses 50 ms");

    let doc = run_api(OllamaGenerate, 4, 2, &llm.url(), &["--slo", "ttft=500ms"]);
    assert_all_ok(&doc, 4);
    assert_eq!(num(&doc, "goodput.good"), 4, "TTFT 100 ms meets 500 ms");
}

// ---------------------------------------------------------------------------------------
// 8. blast mock
// ---------------------------------------------------------------------------------------

/// A response read off the wire, its body de-chunked.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> io::Result<RawResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;

    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => return Err(bad(format!("bad response head: {other:?}"))),
    };
    let headers = common::owned_headers(resp.headers);
    let mut r = RawResponse {
        status: resp.code.unwrap_or(0),
        headers,
        body: Vec::new(),
    };
    let rest = &raw[head_len..];
    r.body = if r
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest).map_err(bad)?
    } else if let Some(n) = r.header("content-length") {
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("Content-Length {n:?}")))?;
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length".into()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(r)
}

/// Decodes a complete chunked body strictly: every size line, CRLF and the last chunk.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("chunk size {line:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailer fields (if any), then the empty line, then nothing.
            return match data == b"\r\n" || data.ends_with(b"\r\n\r\n") {
                true => Ok(out),
                false => Err(format!(
                    "bad end of chunked body: {:?}",
                    String::from_utf8_lossy(data)
                )),
            };
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return Err(format!("chunk of {size} bytes not followed by CRLF"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[test]
fn mock_speaks_ollama_openai_and_prometheus_over_raw_http() {
    let mock = Mock::start("--tokens 5");
    let port = mock.port;

    let r = raw_request(port, "GET", "/", None).expect("GET /");
    assert_eq!((r.status, r.text().as_str()), (200, "Ollama is running"));

    // Ollama: NDJSON lines inside chunked framing, the last one done with the token count.
    let body = json!({"model": "llama3.2", "prompt": "hi", "stream": true});
    let r = raw_request(port, "POST", "/api/generate", Some(&body)).expect("POST /api/generate");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let text = r.text();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("NDJSON line {l:?}: {e}")))
        .collect();
    let (last, tokens) = lines.split_last().expect("some lines");
    assert_eq!(last["done"], json!(true), "{last}");
    assert_eq!(last["eval_count"], json!(tokens.len()), "{last}");
    assert_eq!(tokens.len(), 5);
    for t in tokens {
        assert_eq!(t["done"], json!(false), "{t}");
        assert!(t["response"].is_string(), "{t}");
    }

    // OpenAI: `data:` events, JSON until the final [DONE].
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                      "stream": true});
    let r = raw_request(port, "POST", "/v1/chat/completions", Some(&body)).expect("POST chat");
    assert_eq!(r.status, 200);
    let text = r.text();
    let payloads: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.strip_prefix("data:")
                .unwrap_or_else(|| panic!("not an SSE data line: {l:?}"))
                .trim()
        })
        .collect();
    let (done, events) = payloads.split_last().expect("some events");
    assert_eq!(*done, "[DONE]");
    let mut content = 0;
    for p in events {
        let v: Value = serde_json::from_str(p).unwrap_or_else(|e| panic!("SSE payload {p:?}: {e}"));
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            content += 1;
        }
    }
    assert_eq!(content, 5, "token events in {text}");

    // Prometheus text, counting the requests above.
    let r = raw_request(port, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("# TYPE mock_requests_total counter"),
        "{text}"
    );
    let generated = text
        .lines()
        .find(|l| l.starts_with("mock_requests_total{") && l.contains("path=\"/api/generate\""))
        .unwrap_or_else(|| panic!("no mock_requests_total for /api/generate:\n{text}"));
    assert!(
        generated.contains("status=\"200\"") && generated.ends_with(" 1"),
        "{generated}"
    );
}

#[test]
fn blast_counts_every_token_of_the_mock() {
    let mock = Mock::start("--tokens 9");
    for dialect in [OllamaGenerate, OpenaiChat] {
        let doc = run_api(dialect, 50, 4, &mock.url(), &["--max-tokens", "9"]);
        assert_all_ok(&doc, 50);
        assert_tokens(&doc, 450, "server");
    }
}

#[test]
fn mock_with_a_full_queue_answers_503() {
    let mock = Mock::start("--parallel 1 --max-queue 2 --token-delay 10ms --tokens 10");
    let doc = run_api(OllamaGenerate, 64, 16, &mock.url(), &[]);
    assert_eq!(num(&doc, "requests.completed"), 64, "{doc:#}");
    assert_no_errors(&doc);
    let (ok, busy) = (num(&doc, "status.200"), num(&doc, "status.503"));
    assert!(ok > 0 && busy > 0, "200: {ok}, 503: {busy}");
    assert_eq!(ok + busy, 64);
}

/// The mock must start and stop promptly every time, mid-request ones included (run it
/// beside two busy loops to check it under CPU contention).
#[test]
fn mock_starts_and_stops_promptly_every_time() {
    let started = Instant::now();
    for i in 0..100 {
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
        let mut mock = Mock::start("--ttft 20ms");
        let r = raw_request(mock.port, "GET", "/", None).expect("GET /");
        assert_eq!(r.status, 200);
        let status = mock.interrupt(Duration::from_secs(3));
        assert!(
            status.is_some_and(|s| s.success()),
            "run {i}: blast mock has not exited 3 s after Ctrl-C ({status:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. blast demo
// ---------------------------------------------------------------------------------------

#[test]
fn demo_runs_and_prints_the_llm_section() {
    let run = run_blast(&["demo", "--duration", "2s", "--quiet"]);
    assert_exit(&run.output, 0);
    let out = run.stdout();
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("Tokens")),
        "{out}"
    );
    assert!(out.contains("Goodput"), "{out}");
}

// ---------------------------------------------------------------------------------------
// 10. Bad LLM input
// ---------------------------------------------------------------------------------------

/// blast exits 2 with one line on stderr mentioning `expect`, and no panic.
fn assert_bad_input(out: &Output, args: &[&str], expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: exit {:?}, stderr:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line:\n{err}"
    );
    assert!(
        err.contains(expect),
        "{args:?}: stderr does not mention {expect:?}:\n{err}"
    );
}

#[test]
fn bad_llm_options_are_refused_before_any_connection() {
    let empty = TempFile::with_contents("empty-prompts.txt", b"\n   \n\n");
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let cases: &[(&[&str], &str)] = &[
        (&["--prompts", "huge"], "huge"),
        (
            &["--prompt-file", "/nonexistent/prompts.txt"],
            "/nonexistent/prompts.txt",
        ),
        (&["--prompt-file", empty.path_str()], "prompt"),
        (&["--slo", "ttft=fast"], "fast"),
        (&["--slo", "nope=1s"], "nope"),
        (&["--body", "x"], "--body"),
        (&["--max-tokens", "0"], "--max-tokens"),
        (&["--model", " "], "--model"),
    ];
    for (options, expect) in cases {
        let mut args = vec![
            "--api",
            "ollama-generate",
            "--requests",
            "1",
            "--duration",
            "1s",
        ];
        args.extend(*options);
        args.push(&url);
        assert_bad_input(&blast(&args), &args, expect);
    }

    // clap's own message for an unknown value spans several lines (with the possible
    // values); it must still be exit 2, name the value, and not panic.
    let args = ["--api", "nope", "--requests", "1", &url];
    let out = blast(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.lines().next().is_some_and(|l| l.contains("nope")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Without `--api` the LLM options would be silently ignored: they are refused instead.
#[test]
fn bad_llm_options_are_refused_even_without_api() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let cases: &[(&[&str], &str)] = &[
        (&["--slo", "ttft=fast"], "--slo"),
        (&["--slo", "ttft=500ms"], "--api"),
        (&["--prompts", "huge"], "--prompts"),
        (
            &["--prompt-file", "/nonexistent/prompts.txt"],
            "--prompt-file",
        ),
        (&["--max-tokens", "0"], "--max-tokens"),
        (&["--model", "x"], "--model"),
    ];
    for (options, expect) in cases {
        let mut args = vec!["--requests", "1", "--duration", "1s"];
        args.extend(*options);
        args.push(&url);
        assert_bad_input(&blast(&args), &args, expect);
    }
}

/// Run `blast args`, killing it after `limit` (a mock that starts would serve forever).
fn blast_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn blast");
    let deadline = Instant::now() + limit;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blast {args:?} still running after {limit:?}: killed");
        }
        thread::sleep(MS(10));
    };
    let mut out = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    // The process has exited: its pipes hold all it wrote (a few lines at most).
    let _ = child
        .stdout
        .take()
        .map(|mut s| s.read_to_end(&mut out.stdout));
    let _ = child
        .stderr
        .take()
        .map(|mut s| s.read_to_end(&mut out.stderr));
    out
}

#[test]
fn bad_mock_options_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["mock", "--error-rate", "2"], "--error-rate"),
        (&["mock", "--listen", "nonsense"], "nonsense"),
    ];
    for (args, expect) in cases {
        let out = blast_within(args, Duration::from_secs(5));
        assert_bad_input(&out, args, expect);
    }
}

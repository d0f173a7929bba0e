//! End-to-end tests over loopback with a std `TcpStream` client. Timing assertions are
//! lower bounds only: the machine may be noisy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

const BUSY: &str =
    r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#;

fn cfg() -> MockConfig {
    let cpu = crate::plan::allowed_cpus().first().copied().unwrap_or(0);
    MockConfig::new("127.0.0.1:0".parse().unwrap(), vec![cpu])
}

fn start(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).expect("mock starts")
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The chunks of a chunked body, in order.
    chunks: Vec<Vec<u8>>,
    /// When the first non-empty chunk had fully arrived.
    first_chunk_at: Option<Instant>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn chunk_strs(&self) -> Vec<&str> {
        self.chunks
            .iter()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect()
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, raw: &[u8]) {
        self.s.write_all(raw).unwrap();
    }

    fn post_raw(path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn post(&mut self, path: &str, body: &str) -> Resp {
        self.send(Self::post_raw(path, body).as_bytes());
        self.read()
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read()
    }

    /// Reads more into the buffer; false on EOF.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        let n = self.s.read(&mut tmp).expect("read (timed out?)");
        self.buf.extend_from_slice(&tmp[..n]);
        n > 0
    }

    fn eof(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.s.read(&mut [0u8; 1]), Ok(0) | Err(_))
    }

    fn read(&mut self) -> Resp {
        let (status, headers, hlen) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8(h.value.to_vec()).unwrap();
                        (h.name.to_string(), v)
                    })
                    .collect();
                if status == 100 {
                    self.buf.drain(..n);
                    continue;
                }
                break (status, headers, n);
            }
            assert!(self.fill(), "EOF inside a response head");
        };
        self.buf.drain(..hlen);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            chunks: Vec::new(),
            first_chunk_at: None,
        };
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill(), "EOF inside a body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let (h, size) = loop {
                    if let Ok(httparse::Status::Complete(x)) = httparse::parse_chunk_size(&self.buf)
                    {
                        break x;
                    }
                    assert!(self.fill(), "EOF inside a chunk header");
                };
                let size = size as usize;
                while self.buf.len() < h + size + 2 {
                    assert!(self.fill(), "EOF inside a chunk");
                }
                assert_eq!(&self.buf[h + size..h + size + 2], b"\r\n");
                let data: Vec<u8> = self.buf[h..h + size].to_vec();
                self.buf.drain(..h + size + 2);
                if size == 0 {
                    break;
                }
                resp.first_chunk_at.get_or_insert_with(Instant::now);
                resp.body.extend_from_slice(&data);
                resp.chunks.push(data);
            }
        } else {
            while self.fill() {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }
}

fn ndjson_lines(r: &Resp) -> Vec<Value> {
    // One chunk per line: every chunk is exactly one complete JSON object + '\n'.
    r.chunk_strs()
        .iter()
        .map(|c| {
            assert!(c.ends_with('\n') && c.matches('\n').count() == 1, "{c:?}");
            serde_json::from_str(c).unwrap()
        })
        .collect()
}

fn sse_events(r: &Resp) -> Vec<String> {
    r.chunk_strs()
        .iter()
        .map(|c| {
            let data = c.strip_prefix("data: ").unwrap_or_else(|| panic!("{c:?}"));
            let data = data.strip_suffix("\n\n").unwrap_or_else(|| panic!("{c:?}"));
            assert!(!data.contains('\n'));
            data.to_string()
        })
        .collect()
}

/// Checks the final Ollama object: counts and durations that add up.
fn check_final(v: &Value, eval_count: u64, reason: &str) -> u64 {
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], reason);
    assert_eq!(v["eval_count"], eval_count);
    assert!(v["prompt_eval_count"].as_u64().unwrap() >= 1);
    let d = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let parts = d("load_duration") + d("prompt_eval_duration") + d("eval_duration");
    assert!(d("total_duration") >= parts, "{v}");
    // What is left is the queue wait.
    d("total_duration") - parts
}

#[test]
fn get_root_and_friends() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Ollama is running");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = c.get("/api/version");
    assert_eq!(r.json()["version"], "0.0.0-blast-mock");
    let r = c.get("/api/tags");
    assert_eq!(r.json()["models"][0]["name"], "llama3.2:latest");
    let r = c.get("/v1/models");
    assert_eq!(r.json()["data"][0]["id"], "llama3.2:latest");
    c.send(b"HEAD / HTTP/1.1\r\n\r\n");
    // A HEAD answer has Content-Length but no body: the next response follows directly.
    c.send(b"GET /nope HTTP/1.1\r\n\r\n");
    while !c.buf.windows(4).any(|w| w == b"\r\n\r\n") {
        c.fill();
    }
    let head_end = c.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    c.buf.drain(..head_end);
    assert_eq!(c.read().status, 404);
    s.stop().unwrap();
}

#[test]
fn generate_streaming() {
    let mut cfg = cfg();
    cfg.tokens = 5;
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let r = c.post(
        "/api/generate",
        r#"{"model":"llama3.2","prompt":"Why is the sky blue?"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson_lines(&r);
    assert_eq!(lines.len(), 6);
    let mut text = String::new();
    for l in &lines[..5] {
        assert_eq!(l["done"], false);
        assert_eq!(l["model"], "llama3.2");
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
        text.push_str(l["response"].as_str().unwrap());
    }
    assert_eq!(text, "The quick brown fox jumps ");
    check_final(&lines[5], 5, "stop");
    assert_eq!(lines[5]["prompt_eval_count"], 5);

    let r = c.post(
        "/api/generate",
        r#"{"model":"llama3.2","prompt":"x","options":{"num_predict":40}}"#,
    );
    let lines = ndjson_lines(&r);
    assert_eq!(lines.len(), 41);
    check_final(&lines[40], 40, "length");
    s.stop().unwrap();
}

#[test]
fn chat_streaming() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let r = c.post(
        "/api/chat",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":3}}"#,
    );
    let lines = ndjson_lines(&r);
    assert_eq!(lines.len(), 4);
    for l in &lines[..3] {
        assert_eq!(l["message"]["role"], "assistant");
        assert!(!l["message"]["content"].as_str().unwrap().is_empty());
        assert_eq!(l["done"], false);
    }
    assert_eq!(lines[3]["message"]["content"], "");
    check_final(&lines[3], 3, "length");
    s.stop().unwrap();
}

#[test]
fn openai_chat_sse_with_usage_and_done() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let r = c.post(
        "/v1/chat/completions",
        r#"{"model":"gpt-x","messages":[{"role":"user","content":"hello there"}],"stream":true,
            "stream_options":{"include_usage":true},"max_tokens":4}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = sse_events(&r);
    // role chunk, 4 tokens, finish, usage, [DONE]
    assert_eq!(ev.len(), 8, "{ev:?}");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let v: Vec<Value> = ev[..7]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for x in &v[1..5] {
        assert_eq!(x["object"], "chat.completion.chunk");
        assert_eq!(x["model"], "gpt-x");
        assert_eq!(x["id"], v[0]["id"]);
        assert!(x["choices"][0]["finish_reason"].is_null());
        // With include_usage, every chunk before the usage one says `"usage": null`.
        assert!(x.get("usage").is_some_and(Value::is_null), "{x}");
        text.push_str(x["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert!(v[0].get("usage").is_some_and(Value::is_null));
    assert!(v[5].get("usage").is_some_and(Value::is_null));
    assert_eq!(text, "The quick brown fox ");
    assert_eq!(v[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(v[5]["choices"][0]["delta"], serde_json::json!({}));
    assert_eq!(v[6]["choices"], serde_json::json!([]));
    let u = &v[6]["usage"];
    assert_eq!(u["completion_tokens"], 4);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 4
    );

    // Completions stream, no usage asked.
    let r = c.post(
        "/v1/completions",
        r#"{"model":"m","prompt":"a","stream":true}"#,
    );
    let ev = sse_events(&r);
    assert_eq!(ev.len(), 32 + 2);
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert!(first.get("usage").is_none());
    assert_eq!(first["choices"][0]["text"], "The ");
    let fin: Value = serde_json::from_str(&ev[32]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    s.stop().unwrap();
}

#[test]
fn no_done() {
    let mut cfg = cfg();
    cfg.no_done = true;
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let r = c.post(
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"max_tokens":2,"stream_options":{"include_usage":true}}"#,
    );
    let ev = sse_events(&r);
    assert_eq!(ev.len(), 5);
    assert!(ev.iter().all(|e| e != "[DONE]"));
    s.stop().unwrap();
}

#[test]
fn non_streaming_bodies() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let r = c.post(
        "/api/generate",
        r#"{"model":"m","prompt":"p","stream":false,"options":{"num_predict":3}}"#,
    );
    assert!(r.header("content-length").is_some());
    let v = r.json();
    assert_eq!(v["response"], "The quick brown ");
    check_final(&v, 3, "length");
    let v = c
        .post("/api/chat", r#"{"model":"m","stream":false}"#)
        .json();
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(
        v["message"]["content"].as_str().unwrap().split(' ').count(),
        33
    );
    check_final(&v, 32, "stop");
    let v = c
        .post("/v1/chat/completions", r#"{"model":"m","max_tokens":2}"#)
        .json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "The quick ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let v = c
        .post(
            "/v1/completions",
            r#"{"model":"m","max_tokens":1,"stream":false}"#,
        )
        .json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "The ");
    assert_eq!(v["usage"]["completion_tokens"], 1);
    s.stop().unwrap();
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

#[test]
fn metrics_count_requests() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    c.post(
        "/api/generate",
        r#"{"model":"m","options":{"num_predict":3}}"#,
    );
    c.post(
        "/api/generate",
        r#"{"model":"m","stream":false,"options":{"num_predict":4}}"#,
    );
    c.post("/api/generate", "{nope");
    c.get("/missing");
    let r = c.get("/metrics");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let t = r.text();
    assert!(t.contains("# TYPE mock_requests_total counter"), "{t}");
    assert_eq!(
        metric(
            t,
            r#"mock_requests_total{path="/api/generate",status="200"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            t,
            r#"mock_requests_total{path="/api/generate",status="400"}"#
        ),
        1
    );
    assert_eq!(
        metric(t, r#"mock_requests_total{path="other",status="404"}"#),
        1
    );
    assert_eq!(metric(t, "mock_tokens_total"), 7);
    assert_eq!(metric(t, "mock_in_flight"), 0);
    assert_eq!(metric(t, "mock_queue_depth"), 0);
    assert!(t.contains("# TYPE mock_in_flight gauge"));
    s.stop().unwrap();
}

#[test]
fn unknown_model_is_404() {
    let mut cfg = cfg();
    cfg.models = Some(vec!["llama3.2".into(), "qwen2.5:0.5b".into()]);
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let r = c.post("/api/generate", r#"{"model":"nope","prompt":"x"}"#);
    assert_eq!(r.status, 404);
    // Ollama's words.
    assert_eq!(
        r.text(),
        r#"{"error":"model \"nope\" not found, try pulling it first"}"#
    );
    let r = c.post("/v1/chat/completions", r#"{"model":"x\"y"}"#);
    assert_eq!(r.status, 404);
    // OpenAI's error object.
    let e = &r.json()["error"];
    assert_eq!(
        e["message"],
        "model \"x\\\"y\" not found, try pulling it first"
    );
    assert_eq!(e["type"], "not_found_error");
    assert!(e["param"].is_null() && e["code"].is_null());
    let r = c.post("/api/show", r#"{"model":"nope"}"#);
    assert_eq!(
        (r.status, r.text()),
        (404, r#"{"error":"model 'nope' not found"}"#)
    );
    let r = c.get("/v1/models/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "model 'nope' not found");
    let r = c.get("/v1/models/llama3.2%3Alatest");
    assert_eq!(r.json()["id"], "llama3.2:latest");
    assert_eq!(
        c.post("/api/embed", r#"{"model":"nope","input":"x"}"#)
            .status,
        404
    );
    assert_eq!(
        c.post("/api/chat", r#"{"model":"llama3.2:latest"}"#).status,
        200
    );
    assert_eq!(
        c.post("/api/chat", r#"{"model":"qwen2.5:0.5b"}"#).status,
        200
    );
    let r = c.get("/api/tags");
    let names: Vec<String> = r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["llama3.2:latest", "qwen2.5:0.5b"]);
    s.stop().unwrap();
}

#[test]
fn parallel_and_max_queue_answer_503() {
    let mut cfg = cfg();
    cfg.parallel = Some(1);
    cfg.max_queue = Some(1);
    cfg.tokens = 5;
    cfg.token_delay = Duration::from_millis(200);
    let s = start(cfg);
    let addr = s.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.post("/api/generate", r#"{"model":"m","prompt":"x"}"#);
                (r.status, r.body)
            })
        })
        .collect();
    let results: Vec<(u16, Vec<u8>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let busy = results.iter().filter(|(s, _)| *s == 503).count();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(busy >= 1 && ok >= 1 && busy + ok == 4, "{results:?}");
    for (status, body) in &results {
        if *status == 503 {
            assert_eq!(std::str::from_utf8(body).unwrap(), BUSY);
        }
    }
    s.stop().unwrap();
}

#[test]
fn queue_wait_shows_in_durations_and_metrics() {
    let mut cfg = cfg();
    cfg.parallel = Some(1);
    cfg.tokens = 20;
    cfg.token_delay = Duration::from_millis(50);
    let s = start(cfg);
    let mut a = Client::connect(s.local_addr());
    a.send(Client::post_raw("/api/generate", r#"{"model":"m"}"#).as_bytes());
    // Wait for A's first token: A now holds the only slot for 19 more token delays.
    while !a.buf.windows(4).any(|w| w == b"The ") {
        a.fill();
    }
    let mut b = Client::connect(s.local_addr());
    b.send(Client::post_raw("/api/chat", r#"{"model":"m","stream":false}"#).as_bytes());
    let mut m = Client::connect(s.local_addr());
    let mut seen_queued = false;
    let poll_until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < poll_until {
        let t = m.get("/metrics");
        if metric(t.text(), "mock_queue_depth") == 1 {
            assert_eq!(metric(t.text(), "mock_in_flight"), 1);
            seen_queued = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ra = a.read();
    let rb = b.read();
    assert_eq!((ra.status, rb.status), (200, 200));
    let queued = check_final(&rb.json(), 20, "stop");
    assert!(queued >= 200_000_000, "B waited {queued} ns for A's slot");
    assert!(seen_queued, "B never showed in mock_queue_depth");
    s.stop().unwrap();
}

#[test]
fn error_rate_one_fails_every_generation() {
    let mut cfg = cfg();
    cfg.error_rate = 1.0;
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    for path in [
        "/api/generate",
        "/api/chat",
        "/v1/chat/completions",
        "/v1/completions",
    ] {
        let r = c.post(path, r#"{"model":"m"}"#);
        assert_eq!(r.status, 500);
        let e = r.json();
        if path.starts_with("/v1") {
            assert_eq!(e["error"]["message"], "mock: injected failure");
            assert_eq!(e["error"]["type"], "api_error");
        } else {
            assert_eq!(r.text(), r#"{"error":"mock: injected failure"}"#);
        }
    }
    assert_eq!(c.get("/").status, 200);
    s.stop().unwrap();
}

#[test]
fn error_rate_is_a_fraction() {
    let mut cfg = cfg();
    cfg.error_rate = 0.5;
    cfg.tokens = 1;
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let fails = (0..200)
        .filter(|_| {
            c.post("/api/generate", r#"{"model":"m","stream":false}"#)
                .status
                == 500
        })
        .count();
    assert!((50..150).contains(&fails), "{fails}");
    s.stop().unwrap();
}

#[test]
fn keep_alive_many_requests_on_one_connection() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    for i in 0..20 {
        match i % 4 {
            0 => assert_eq!(c.get("/").status, 200),
            1 => assert_eq!(
                ndjson_lines(&c.post("/api/chat", r#"{"model":"m"}"#)).len(),
                33
            ),
            2 => assert_eq!(c.post("/v1/completions", r#"{"model":"m"}"#).status, 200),
            _ => assert_eq!(c.get("/api/version").status, 200),
        }
    }
    let r = c.get("/metrics");
    assert_eq!(
        metric(r.text(), r#"mock_requests_total{path="/",status="200"}"#),
        5
    );
    // Connection: close is honoured.
    c.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.read();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.eof());
    s.stop().unwrap();
}

#[test]
fn pipelined_requests_in_one_write() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let mut raw = String::new();
    raw.push_str("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.push_str(&Client::post_raw(
        "/api/generate",
        r#"{"model":"m","options":{"num_predict":2}}"#,
    ));
    raw.push_str(&Client::post_raw(
        "/api/chat",
        r#"{"model":"m","stream":false}"#,
    ));
    raw.push_str("GET /api/version HTTP/1.1\r\nHost: t\r\n\r\n");
    // A chunked request body in the same batch.
    raw.push_str(
        "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\n{\"mod\r\n10\r\nel\":\"m\",\"max_tok\r\n8\r\nens\":1}\n\r\n0\r\n\r\n",
    );
    c.send(raw.as_bytes());
    assert_eq!(c.read().text(), "Ollama is running");
    assert_eq!(ndjson_lines(&c.read()).len(), 3);
    assert_eq!(c.read().json()["done"], true);
    assert_eq!(c.read().json()["version"], "0.0.0-blast-mock");
    assert_eq!(c.read().json()["choices"][0]["text"], "The ");
    s.stop().unwrap();
}

#[test]
fn ttft_and_token_delay_are_honoured() {
    let mut cfg = cfg();
    cfg.tokens = 5;
    cfg.ttft = Duration::from_millis(150);
    cfg.token_delay = Duration::from_millis(30);
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let t0 = Instant::now();
    let r = c.post("/api/generate", r#"{"model":"m"}"#);
    let elapsed = t0.elapsed();
    assert!(r.first_chunk_at.unwrap() - t0 >= Duration::from_millis(150));
    // First token at ttft, the last (and the final object with it) 4 token delays later.
    assert!(
        elapsed >= Duration::from_millis(150 + 4 * 30),
        "{elapsed:?}"
    );
    let lines = ndjson_lines(&r);
    let fin = &lines[5];
    check_final(fin, 5, "stop");
    let d = |k: &str| fin[k].as_u64().unwrap();
    assert!(d("prompt_eval_duration") >= 150_000_000);
    // A late first token shortens eval_duration, but the two together cannot shrink.
    assert!(d("prompt_eval_duration") + d("eval_duration") >= 270_000_000);

    let t0 = Instant::now();
    let r = c.post("/v1/chat/completions", r#"{"model":"m","max_tokens":3}"#);
    assert!(t0.elapsed() >= Duration::from_millis(150 + 2 * 30));
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    s.stop().unwrap();
}

#[test]
fn stop_is_prompt_with_clients_connected() {
    let mut cfg = cfg();
    cfg.ttft = Duration::from_secs(30);
    let s = start(cfg);
    let addr = s.local_addr();
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/").status, 200);
    let mut streaming = Client::connect(addr);
    streaming.send(Client::post_raw("/api/generate", r#"{"model":"m"}"#).as_bytes());
    let mut half = Client::connect(addr);
    half.send(b"POST /api/chat HTTP/1.1\r\nContent-Length: 100\r\n\r\n{");
    std::thread::sleep(Duration::from_millis(100));
    // A client that never reads a long response leaves the server blocked in a write.
    let mut stuck = Client::connect(addr);
    stuck.send(
        Client::post_raw(
            "/v1/completions",
            r#"{"model":"m","stream":false,"max_tokens":1000000}"#,
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    s.stop().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert!(idle.eof());
    assert!(half.eof());
    // The stream was cut before its first token: EOF, no complete response.
    let mut rest = Vec::new();
    let _ = streaming.s.read_to_end(&mut rest);
    assert!(!rest.windows(5).any(|w| w == b"0\r\n\r\n"));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn run_until_returns_when_flag_set() {
    let s = start(cfg());
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let t = std::thread::spawn(move || s.run_until(&f));
    std::thread::sleep(Duration::from_millis(60));
    flag.store(true, Ordering::Relaxed);
    t.join().unwrap().unwrap();
}

#[test]
fn protocol_errors() {
    let s = start(cfg());
    let addr = s.local_addr();
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/api/nothing").status, 404);
    assert_eq!(c.get("/api/generate").status, 405);
    let r = c.post("/api/tags", "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = c.post("/api/chat", r#"{"model":"m","stream":"yes"}"#);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    assert_eq!(c.post("/api/chat", r#"{"messages":[]}"#).status, 400);
    assert_eq!(c.post("/api/chat", "").status, 400);
    // Still usable after JSON errors; a broken request line gets 400 and a close.
    assert_eq!(c.get("/").status, 200);
    c.send(b"BLAH\r\n\r\n");
    let r = c.read();
    assert_eq!(r.status, 400);
    assert!(c.eof());

    let mut c = Client::connect(addr);
    c.send(b"POST /api/chat HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n");
    assert_eq!(c.read().status, 413);
    assert!(c.eof());
    s.stop().unwrap();
}

#[test]
fn expect_100_continue() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let body = r#"{"model":"m","stream":false,"options":{"num_predict":1}}"#;
    c.send(
        format!(
            "POST /api/generate HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    while c.buf.is_empty() {
        c.fill();
    }
    assert!(c.buf.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    c.send(body.as_bytes());
    assert_eq!(c.read().json()["response"], "The ");
    s.stop().unwrap();
}

#[test]
fn http10_stream_is_close_delimited() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let body = r#"{"model":"m","options":{"num_predict":2}}"#;
    c.send(
        format!(
            "POST /api/generate HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read();
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text().lines().count(), 3);
    let mut c = Client::connect(s.local_addr());
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read().header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.read().status, 200);
    assert!(c.eof());
    s.stop().unwrap();
}

#[test]
fn several_cores_share_one_port() {
    let cpus = crate::plan::allowed_cpus();
    let mut cfg = cfg();
    cfg.cpus = vec![cpus[0], *cpus.last().unwrap(), cpus[0]];
    cfg.parallel = Some(2);
    let s = start(cfg);
    let addr = s.local_addr();
    assert_ne!(addr.port(), 0);
    let threads: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..5)
                    .map(|_| ndjson_lines(&c.post("/api/generate", r#"{"model":"m"}"#)).len())
                    .sum::<usize>()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 5 * 33);
    }
    let t = Client::connect(addr).get("/metrics");
    assert_eq!(
        metric(
            t.text(),
            r#"mock_requests_total{path="/api/generate",status="200"}"#
        ),
        60
    );
    assert_eq!(metric(t.text(), "mock_tokens_total"), 60 * 32);
    s.stop().unwrap();
}

#[test]
fn bad_cpu_is_an_error() {
    let mut cfg = cfg();
    cfg.cpus = vec![100_000];
    assert!(matches!(
        MockServer::start(cfg),
        Err(MockError::Executor(_))
    ));
    let mut cfg = self::cfg();
    cfg.cpus.clear();
    assert!(matches!(MockServer::start(cfg), Err(MockError::NoCpus)));
}

#[test]
fn port_in_use_is_an_error() {
    let s = start(cfg());
    let mut c2 = cfg();
    c2.listen = s.local_addr();
    match MockServer::start(c2) {
        Err(MockError::Bind { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound a port in use"),
    }
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c3 = cfg();
    c3.listen = plain.local_addr().unwrap();
    assert!(matches!(MockServer::start(c3), Err(MockError::Bind { .. })));
    s.stop().unwrap();
}

#[test]
fn args_validation() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }
    let parse = |argv: &[&str]| {
        let mut v = vec!["mock"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v)
            .unwrap()
            .args
            .to_config(vec![3, 5, 7])
    };
    let c = parse(&[]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:11434".parse().unwrap());
    // Every CPU by default, as for the load test.
    assert_eq!((c.cpus.clone(), c.tokens, c.seed), (vec![3, 5, 7], 32, 1));
    assert_eq!(
        (c.header_timeout, c.idle_timeout),
        (Duration::from_secs(10), Duration::from_secs(120))
    );
    assert_eq!((c.ttft, c.token_delay), (Duration::ZERO, Duration::ZERO));
    let c = parse(&[
        "--listen",
        "0.0.0.0:0",
        "--cores",
        "2",
        "--tokens",
        "7",
        "--ttft",
        "1s",
        "--token-delay",
        "20ms",
        "--parallel",
        "4",
        "--max-queue",
        "0",
        "--error-rate",
        "0.25",
        "--models",
        "a,b:7b",
        "--no-done",
        "--seed",
        "9",
        "--header-timeout",
        "2s",
        "--idle-timeout",
        "0s",
    ])
    .unwrap();
    assert_eq!(c.cpus, vec![3, 5]);
    assert_eq!(c.ttft, Duration::from_secs(1));
    assert_eq!(c.token_delay, Duration::from_millis(20));
    assert_eq!((c.parallel, c.max_queue, c.seed), (Some(4), Some(0), 9));
    assert_eq!(c.models, Some(vec!["a".to_string(), "b:7b".to_string()]));
    assert!(c.no_done);
    assert_eq!(
        (c.header_timeout, c.idle_timeout),
        (Duration::from_secs(2), Duration::ZERO)
    );
    let err = |argv: &[&str]| parse(argv).unwrap_err().to_string();
    assert!(err(&["--error-rate", "1.5"]).contains("--error-rate"));
    assert!(err(&["--parallel", "0"]).contains("--parallel"));
    assert!(err(&["--max-queue", "3"]).contains("--parallel"));
    assert!(err(&["--listen", "nowhere"]).contains("--listen"));
    let ttft = err(&["--ttft", "soon"]);
    assert!(
        ttft.starts_with("--ttft: ") && ttft.contains("\"soon\""),
        "{ttft}"
    );
    assert!(!ttft.contains('\n'), "one line: {ttft}");
    assert!(err(&["--token-delay", "5"]).contains("--token-delay"));
    assert!(err(&["--cores", "4"]).contains("3 CPUs"));
    assert!(err(&["--cores", "0"]).contains("--cores"));
    assert!(err(&["--models", "a,,b"]).contains("--models"));
}

fn gauges(m: &mut Client) -> (u64, u64) {
    let t = m.get("/metrics");
    (
        metric(t.text(), "mock_in_flight"),
        metric(t.text(), "mock_queue_depth"),
    )
}

/// Polls /metrics until `done` holds for (in_flight, queue_depth); panics after 5 s.
fn wait_gauges(m: &mut Client, what: &str, done: impl Fn(u64, u64) -> bool) -> (u64, u64) {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let g = gauges(m);
        if done(g.0, g.1) {
            return g;
        }
        assert!(Instant::now() < give_up, "{what}: still {g:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cancelled_requests_free_their_slot_in_turn() {
    let mut cfg = cfg();
    cfg.parallel = Some(1);
    cfg.ttft = Duration::from_secs(20);
    let s = start(cfg);
    let addr = s.local_addr();
    let gen = Client::post_raw("/api/generate", r#"{"model":"m"}"#);
    let mut m = Client::connect(addr);
    let send = |m: &mut Client, expect: (u64, u64)| {
        let mut c = Client::connect(addr);
        c.send(gen.as_bytes());
        wait_gauges(m, "request arrives", |f, q| f + q == expect.0 + expect.1);
        assert_eq!(gauges(m), expect);
        c
    };
    let a = send(&mut m, (1, 0));
    let b = send(&mut m, (1, 1));
    let c = send(&mut m, (1, 2));
    drop(c);
    // C's ticket must wait for its turn: freeing it now would let B run beside A.
    wait_gauges(&mut m, "C leaves the queue", |f, q| q < 2 || f > 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(gauges(&mut m), (1, 1));
    // A leaves during its ttft, B gets the slot.
    drop(a);
    wait_gauges(&mut m, "B runs", |f, q| f == 1 && q == 0);
    let d = send(&mut m, (1, 1));
    // B leaves: the slot passes over C's dead ticket to D.
    drop(b);
    wait_gauges(&mut m, "D runs", |f, q| f == 1 && q == 0);
    drop(d);
    wait_gauges(&mut m, "all gone", |f, q| f == 0 && q == 0);
    s.stop().unwrap();
}

#[test]
fn new_endpoints_answer_like_ollama_and_openai() {
    let s = start(cfg());
    let mut c = Client::connect(s.local_addr());
    let r = c.get("/health");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c.get("/api/ps");
    let m = &r.json()["models"][0];
    assert_eq!(m["name"], "llama3.2:latest");
    assert!(m["size_vram"].is_u64() && m["expires_at"].is_string());
    let r = c.post("/api/show", r#"{"model":"llama3.2"}"#);
    let v = r.json();
    assert!(v["modelfile"].is_string() && v["details"]["family"] == "llama");
    assert!(v["model_info"].is_object() && v["capabilities"].is_array());
    let r = c.get("/v1/models/qwen2.5:0.5b");
    assert_eq!(r.json()["object"], "model");
    assert_eq!(r.json()["id"], "qwen2.5:0.5b");
    // Llama Stack's alias of the OpenAI paths.
    let r = c.get("/v1/openai/v1/models");
    assert_eq!(r.json()["object"], "list");

    let r = c.post("/api/embed", r#"{"model":"m","input":["a","b"]}"#);
    let v = r.json();
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].as_array().unwrap().len(), super::api::EMBED_DIM);
    assert_ne!(e[0], e[1]);
    assert!(v["prompt_eval_count"].is_u64() && v["total_duration"].is_u64());
    // Deterministic: the same input gives the same vector, on every route.
    let r = c.post("/api/embeddings", r#"{"model":"m","prompt":"a"}"#);
    assert_eq!(r.json()["embedding"], e[0]);
    let r = c.post("/v1/embeddings", r#"{"model":"m","input":"a"}"#);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["embedding"], e[0]);
    assert!(v["usage"]["prompt_tokens"].is_u64());
    let r = c.post(
        "/v1/openai/v1/embeddings",
        r#"{"model":"m","input":"a","encoding_format":"base64"}"#,
    );
    let b64 = r.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let floats: Vec<f32> = raw
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = e[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, want);

    // Errors on /v1 routes take OpenAI's shape, Ollama's elsewhere.
    let r = c.post("/v1/embeddings", "{");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = c.post("/v1/chat/completions", r#"{"messages":[]}"#);
    assert_eq!(r.json()["error"]["message"], "model is required");
    let r = c.post("/api/chat", r#"{"messages":[]}"#);
    assert_eq!(r.json()["error"], "model is required");
    let r = c.get("/v1/embeddings");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["message"], "method not allowed");

    let t = c.get("/metrics");
    let t = t.text();
    for label in [
        "/api/ps",
        "/api/show",
        "/api/embed",
        "/api/embeddings",
        "/v1/models/{id}",
        "/v1/embeddings",
        "/health",
    ] {
        assert!(
            t.contains(&format!("path=\"{label}\",status=\"200\"")),
            "{label}: {t}"
        );
    }
    s.stop().unwrap();
}

#[test]
fn ollama_wire_details() {
    let mut cfg = cfg();
    cfg.tokens = 3;
    cfg.token_delay = Duration::from_millis(20);
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    let r = c.post("/api/generate", r#"{"model":"m","prompt":"12345678"}"#);
    let lines = ndjson_lines(&r);
    assert_eq!(lines.len(), 4);
    // `context` holds prompt and answer token ids.
    let ctx = lines[3]["context"].as_array().unwrap();
    assert_eq!(ctx.len(), 2 + 3);
    assert!(ctx.iter().all(Value::is_u64));
    // Every chunk is stamped when it was produced.
    let at: Vec<&str> = lines
        .iter()
        .map(|l| l["created_at"].as_str().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    let r = c.post("/api/generate", r#"{"model":"m","stream":false}"#);
    assert_eq!(r.json()["context"].as_array().unwrap().len(), 1 + 3);
    // Chat has no context.
    let r = c.post("/api/chat", r#"{"model":"m","stream":false}"#);
    assert!(r.json().get("context").is_none());
    s.stop().unwrap();
}

#[test]
fn done_follows_the_last_token_at_once() {
    let mut cfg = cfg();
    cfg.tokens = 4;
    // Gaps long enough that a busy machine's jitter cannot pass for a fourth one.
    cfg.token_delay = Duration::from_millis(250);
    let s = start(cfg);
    let mut c = Client::connect(s.local_addr());
    for (path, body) in [
        ("/api/generate", r#"{"model":"m"}"#),
        ("/v1/chat/completions", r#"{"model":"m","stream":true}"#),
    ] {
        let t0 = Instant::now();
        let r = c.post(path, body);
        let took = t0.elapsed();
        // Three gaps between four tokens; a fourth would be the old extra delay.
        assert!(took >= Duration::from_millis(750), "{path}: {took:?}");
        assert!(took < Duration::from_millis(950), "{path}: {took:?}");
        assert!(r.status == 200);
    }
    s.stop().unwrap();
}

#[test]
fn slow_heads_and_idle_connections_are_closed() {
    let mut cfg = cfg();
    cfg.header_timeout = Duration::from_millis(300);
    cfg.idle_timeout = Duration::from_millis(800);
    let s = start(cfg);
    // A head that never completes is closed after the header timeout, though it trickles.
    let mut c = Client::connect(s.local_addr());
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(150));
    c.send(b"X-A: 1\r\n");
    assert!(c.eof());
    let took = t0.elapsed();
    // Closed by the timeout, not held open (how soon after it is the machine's business).
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // An idle keep-alive connection lives longer, then is closed too.
    let mut c = Client::connect(s.local_addr());
    assert_eq!(c.get("/").status, 200);
    let t0 = Instant::now();
    assert!(c.eof());
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    s.stop().unwrap();
}

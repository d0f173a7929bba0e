//! `blast overhead`: a proxy written here, in front of a loopback upstream, adds a known
//! delay, drops token events or buffers streams; blast must report what it does.
//!
//! Every run is bounded by `--requests` or `--duration` and by the harness's hard timeout.

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use common::{
    closed_port, parse_request, read_more, run_blast, signal_after, temp_path, Acceptor, Behaviour,
    Mock, TestServer,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

// ---------------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------------

/// What the proxy does to what passes through it.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Hold each request this long before forwarding it.
    Delay(Duration),
    /// Drop every `n`th token line of a streamed (chunked NDJSON) response.
    DropEvery(u64),
    /// Read the whole streamed response before writing any of it.
    Buffer,
}

/// A loopback HTTP/1.1 proxy: one upstream connection per client connection; counts the
/// requests it forwarded. Stops when dropped.
struct Proxy {
    acceptor: Acceptor,
    requests: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: SocketAddr, mode: Mode) -> Proxy {
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        let acceptor = Acceptor::start(move |client, stop| {
            let _ = relay(client, upstream, mode, &count, stop);
        });
        Proxy { acceptor, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.acceptor.addr())
    }

    /// Requests forwarded, once every connection has ended.
    fn requests(&self) -> u64 {
        self.acceptor.settle();
        self.requests.load(Ordering::SeqCst)
    }
}

fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: Mode,
    count: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    // The delay's sleep ends within 1 ns of its deadline, not the default 50 us of timer
    // slack: the proxy then adds its delay and its forwarding, no more.
    // SAFETY: prctl(2) on this thread's own timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    client.set_read_timeout(Some(MS(20)))?;
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream)?;
    up.set_nodelay(true)?;
    up.set_read_timeout(Some(MS(20)))?;
    let (mut buf, mut ubuf) = (Vec::new(), Vec::new());
    let mut dropped = 0u64;
    loop {
        let used = loop {
            if let Some((_, used)) = parse_request(&buf)? {
                break used;
            }
            if !read_more(&mut client, &mut buf, stop)? {
                return Ok(());
            }
        };
        if let Mode::Delay(d) = mode {
            thread::sleep(d);
        }
        up.write_all(&buf[..used])?;
        buf.drain(..used);
        count.fetch_add(1, Ordering::SeqCst);
        // The response head.
        let (head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp
                .parse(&ubuf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let value = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let length = value("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
                break (n, length, chunked);
            }
            if !read_more(&mut up, &mut ubuf, stop)? {
                return Ok(());
            }
        };
        let mut out: Vec<u8> = ubuf.drain(..head_len).collect();
        if !chunked {
            let len = length.unwrap_or(0);
            while ubuf.len() < len {
                if !read_more(&mut up, &mut ubuf, stop)? {
                    return Ok(());
                }
            }
            out.extend(ubuf.drain(..len));
            client.write_all(&out)?;
            continue;
        }
        let buffer = matches!(mode, Mode::Buffer);
        if !buffer {
            client.write_all(&out)?;
            out.clear();
        }
        // Chunks, one at a time: "size\r\ndata\r\n", the last of size 0.
        loop {
            let line_end = loop {
                if let Some(i) = ubuf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !read_more(&mut up, &mut ubuf, stop)? {
                    return Ok(());
                }
            };
            let size_text = String::from_utf8_lossy(&ubuf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            while ubuf.len() < line_end + 2 + size + 2 {
                if !read_more(&mut up, &mut ubuf, stop)? {
                    return Ok(());
                }
            }
            let data: Vec<u8> = ubuf[line_end + 2..line_end + 2 + size].to_vec();
            ubuf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                out.extend_from_slice(b"0\r\n\r\n");
                client.write_all(&out)?;
                break;
            }
            let data = match mode {
                Mode::DropEvery(n) => {
                    let mut kept = Vec::new();
                    for line in data.split_inclusive(|b| *b == b'\n') {
                        let pat: &[u8] = b"\"done\":false";
                        let token = line.windows(pat.len()).any(|w| w == pat);
                        if token {
                            dropped += 1;
                            if dropped.is_multiple_of(n) {
                                continue;
                            }
                        }
                        kept.extend_from_slice(line);
                    }
                    kept
                }
                _ => data,
            };
            if data.is_empty() {
                continue;
            }
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            if !buffer {
                client.write_all(&out)?;
                out.clear();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// blast mock as the upstream
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Running blast overhead
// ---------------------------------------------------------------------------------------

/// `blast overhead` with `args`, `--quiet --json`; its exit code, stdout and document.
/// A streamed Ollama workload of `requests` per side at 40/s on 8 connections.
fn streamed_overhead(via: &str, direct: &str, requests: u32) -> (Option<i32>, String, Value) {
    let requests = requests.to_string();
    overhead(&[
        "--via",
        via,
        "--direct",
        direct,
        "--api",
        "ollama-generate",
        "--rate",
        "40",
        "--requests",
        &requests,
        "--conns",
        "8",
    ])
}

fn overhead(args: &[&str]) -> (Option<i32>, String, Value) {
    let path = temp_path("overhead.json");
    let path_text = path.to_str().expect("utf-8").to_string();
    let mut all = vec!["overhead"];
    all.extend_from_slice(args);
    all.extend(["--quiet", "--json", &path_text]);
    let run = run_blast(&all);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {:?}:\n{}", run.code(), run.stderr()));
    let _ = std::fs::remove_file(&path);
    let doc = serde_json::from_str(&text).expect("valid JSON");
    (run.code(), run.stdout(), doc)
}

fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number"))
}

fn codes(doc: &Value) -> Vec<String> {
    doc["overhead"]["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The delay the proxy adds is what `overhead` reports at p50, within 0.5 ms, with an
/// interval that holds it and excludes 0; each side sent what was asked (`per_side`, if
/// given), and the servers received exactly what blast counted for each side.
fn check_delay(upstream: Behaviour, load: &[&str], per_side: Option<u64>) {
    let upstream = TestServer::start(upstream);
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", upstream.port()).parse().unwrap(),
        Mode::Delay(MS(5)),
    );
    let (via, direct) = (proxy.url("/"), upstream.url("/"));
    let mut args = vec!["--via", &via, "--direct", &direct];
    args.extend_from_slice(load);
    let (code, stdout, doc) = overhead(&args);
    assert_eq!(code, Some(0), "{stdout}");
    let o = &doc["overhead"];
    let sent = |side: &str| num(o, &format!("{side}.requests.sent")) as u64;
    for side in ["via", "direct"] {
        let ok = num(o, &format!("{side}.requests.ok")) as u64;
        assert_eq!(ok, sent(side), "{side}: every request answered");
        if let Some(n) = per_side {
            assert_eq!(sent(side), n, "{side}");
        }
    }
    assert_eq!(
        proxy.requests(),
        sent("via"),
        "the proxy forwarded what went via it"
    );
    assert_eq!(
        upstream.counts().requests,
        sent("via") + sent("direct"),
        "the upstream received via's and direct's"
    );
    let p50 = &o["delta"]["latency"]["p50"];
    let delta = num(p50, "delta_ms");
    eprintln!("{load:?}: p50 delta {delta:.3} ms");
    assert!(
        (delta - 5.0).abs() <= 0.5,
        "p50 delta {delta} ms, not 5 ms:\n{stdout}"
    );
    let (lo, hi) = (num(p50, "ci95_low_ms"), num(p50, "ci95_high_ms"));
    assert!(
        lo > 0.0 && lo <= delta && delta <= hi,
        "[{lo}, {hi}] vs {delta}"
    );
    assert!(num(p50, "via_ms") > num(p50, "direct_ms"));
    for key in ["p90", "p99", "p999"] {
        assert!(o["delta"]["latency"][key]["delta_ms"].is_number(), "{key}");
    }
    assert!(
        o["via"]["latency_us"]["p50"].is_number(),
        "full result documents"
    );
    assert!(stdout.contains("latency p50"), "{stdout}");
}

#[test]
fn open_loop_overhead_is_the_proxys_delay() {
    check_delay(
        Behaviour::keep_alive(),
        &["--rate", "100", "--requests", "150", "--conns", "8"],
        Some(150),
    );
}

#[test]
fn closed_loop_overhead_is_the_proxys_delay() {
    // By time, not by count: a count would let the faster side finish first and the other
    // run on alone. An upstream that takes 2 ms keeps the direct side from spinning the
    // machine's two cores (which would slow the proxy's own threads beyond its delay).
    check_delay(
        Behaviour::keep_alive().delay(MS(2)),
        &["--conns", "4", "--duration", "2s"],
        None,
    );
}

/// Ollama through a proxy that drops every fourth token line: the server's count (the final
/// object's eval_count) is unchanged, the token events are not: flagged.
#[test]
fn a_proxy_that_drops_tokens_is_flagged() {
    let mock = Mock::start("--tokens 16 --token-delay 1ms");
    let proxy = Proxy::start(mock.addr(), Mode::DropEvery(4));
    let (via, direct) = (
        proxy.url("/api/generate"),
        format!("http://{}/api/generate", mock.addr()),
    );
    let (code, stdout, doc) = streamed_overhead(&via, &direct, 60);
    assert_eq!(code, Some(0), "{stdout}");
    let t = &doc["overhead"]["tokens"];
    assert_eq!(t["match"], false, "{t}");
    assert_eq!(num(t, "direct_events_per_response"), 16.0, "{t}");
    assert_eq!(num(t, "via_events_per_response"), 12.0, "{t}");
    assert!(
        codes(&doc).contains(&"tokens_mismatch".to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("MISMATCH"), "{stdout}");
    for m in ["ttft", "itl", "tpot", "ttfb"] {
        assert!(
            doc["overhead"]["delta"][m]["p50"]["delta_ms"].is_number(),
            "{m}"
        );
    }
    assert_eq!(proxy.requests(), 60);

    // The same workload through a faithful proxy: no mismatch.
    let fair = Proxy::start(mock.addr(), Mode::Delay(Duration::ZERO));
    let via = fair.url("/api/generate");
    let (code, stdout, doc) = streamed_overhead(&via, &direct, 40);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(doc["overhead"]["tokens"]["match"], true, "{stdout}");
    assert!(
        !codes(&doc).contains(&"tokens_mismatch".to_string()),
        "{stdout}"
    );
}

/// A proxy that holds the whole stream: ITL collapses through it, not direct: called out.
#[test]
fn a_buffering_proxy_is_called_out() {
    let mock = Mock::start("--tokens 12 --token-delay 3ms");
    let proxy = Proxy::start(mock.addr(), Mode::Buffer);
    let (via, direct) = (
        proxy.url("/api/generate"),
        format!("http://{}/api/generate", mock.addr()),
    );
    let (code, stdout, doc) = streamed_overhead(&via, &direct, 40);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        codes(&doc).contains(&"proxy_buffers_stream".to_string()),
        "{stdout}"
    );
    assert_eq!(
        doc["overhead"]["tokens"]["match"], true,
        "nothing dropped: {stdout}"
    );
}

#[test]
fn bad_options_are_one_line_and_exit_2() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/");
    let cases: [&[&str]; 5] = [
        &["overhead"],
        &["overhead", "--via", &url],
        &["overhead", "--via", &url, "--direct"],
        &["overhead", "--via", &url, "--direct", "ftp://x/"],
        &[
            "overhead", "--via", &url, "--direct", &url, "--shard", "0/2",
        ],
    ];
    for args in cases {
        let run = run_blast(args);
        let err = run.stderr();
        assert_eq!(run.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("blast: "), "{args:?}: {err}");
    }
}

/// Ctrl-C stops both sides and still writes the comparison; exit 130.
#[test]
fn ctrl_c_still_reports() {
    let upstream = TestServer::start(Behaviour::keep_alive());
    let url = upstream.url("/");
    let path = temp_path("overhead-int.json");
    let child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args([
            "overhead",
            "--via",
            &url,
            "--direct",
            &url,
            "--rate",
            "50",
            "--duration",
            "30s",
        ])
        .args(["--conns", "4", "--quiet", "--json", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blast");
    let (code, out, ..) = signal_after(child, Duration::from_millis(1500), libc::SIGINT);
    assert_eq!(code, Some(130), "{out}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("JSON written"))
        .expect("valid JSON");
    let _ = std::fs::remove_file(&path);
    assert_eq!(doc["interrupted"], true);
    assert!(num(&doc, "overhead.via.requests.sent") > 0.0);
    assert!(num(&doc, "overhead.direct.requests.sent") > 0.0);
    assert!(out.contains("latency p50"), "{out}");
    let _ = std::io::stdout().flush();
}

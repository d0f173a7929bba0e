//! Issue 12: what the report says about a run beyond its counts: the messages behind the
//! error counts, what limited an open-loop run (`open_loop.limited_by`), the `warnings`
//! list, and compressed LLM streams. blast runs against loopback servers written here.

mod common;

use common::doc::*;

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    blast, blast_json, closed_port, parse_request, read_more, Acceptor, Behaviour, TestServer,
};

/// The messages of one error kind in the result document.
fn messages(doc: &serde_json::Value, kind: &str) -> Vec<String> {
    at(doc, &format!("error_messages.{kind}"))
        .as_array()
        .unwrap_or_else(|| panic!("error_messages.{kind} is not a list:\n{doc:#}"))
        .iter()
        .map(|m| m.as_str().expect("a message is a string").to_string())
        .collect()
}

/// Errors say what they were, in the JSON and under Errors in the summary.
#[test]
fn connect_errors_say_the_connection_was_refused() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let (_, doc) = blast_json(&[&url, "--requests", "3", "--conns", "1"]);
    assert!(num(&doc, "errors.connect") > 0, "{doc:#}");
    let connect = messages(&doc, "connect");
    assert!(
        connect.len() == 1 && connect[0].to_lowercase().contains("refused"),
        "{connect:?}"
    );
    let out = blast(&[&url, "--requests", "3", "--conns", "1"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("connect: {}", connect[0])),
        "{summary}"
    );
}

#[test]
fn parse_errors_say_what_was_wrong() {
    let server = TestServer::start(Behaviour::keep_alive().garbage());
    let (_, doc) = blast_json(&[&server.url("/"), "--conns", "2", "--requests", "6"]);
    assert!(num(&doc, "errors.parse") > 0, "{doc:#}");
    let parse = messages(&doc, "parse");
    assert!(!parse.is_empty() && parse.len() <= 4, "{parse:?}");
    assert!(parse.iter().all(|m| m.contains("response")), "{parse:?}");
    // Kinds that did not occur have no entry.
    assert!(
        at(&doc, "error_messages").get("timeout").is_none(),
        "{doc:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Servers written for these tests
// ---------------------------------------------------------------------------------------

/// Serve every request of a connection with `answer(stream)`, which writes the response.
fn serve_each(
    answer: impl Fn(&mut TcpStream) -> io::Result<()> + Send + Sync + 'static,
) -> Acceptor {
    Acceptor::start(move |mut stream, stop| {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::new();
        loop {
            while let Ok(Some((_, used))) = parse_request(&buf) {
                buf.drain(..used);
                if answer(&mut stream).is_err() {
                    return;
                }
            }
            if !matches!(read_more(&mut stream, &mut buf, stop), Ok(true)) {
                return;
            }
        }
    })
}

fn url(acceptor: &Acceptor, path: &str) -> String {
    format!("http://{}{path}", acceptor.addr())
}

/// A server that answers one request at a time over all its connections, each after
/// `service`: it can do 1 / service requests per second, however many connections.
fn one_at_a_time(service: Duration) -> Acceptor {
    let lock = Arc::new(Mutex::new(()));
    serve_each(move |stream| {
        {
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            thread::sleep(service);
        }
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
}

fn warning_codes(doc: &serde_json::Value) -> Vec<String> {
    at(doc, "warnings")
        .as_array()
        .expect("warnings is a list")
        .iter()
        .map(|w| {
            assert!(!text(w, "message").is_empty(), "{w:#}");
            text(w, "code").to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// What limited an open-loop run
// ---------------------------------------------------------------------------------------

/// A short run against a healthy server: nothing limited it and nothing is said, however
/// late its first sends were.
#[test]
fn a_short_healthy_run_is_limited_by_nothing() {
    let server = TestServer::start(Behaviour::keep_alive());
    let args = [
        &server.url("/")[..],
        "--rate",
        "50",
        "--duration",
        "1s",
        "--cores",
        "1",
    ];
    let (out, doc) = blast_json(&args);
    assert_exit(&out, 0);
    let open_loop = at(&doc, "open_loop");
    assert_eq!(text(&doc, "open_loop.limited_by"), "none", "{open_loop:#}");
    assert!(flag(&doc, "open_loop.kept_up"), "{open_loop:#}");
    assert!(warning_codes(&doc).is_empty(), "{doc:#}");
    let summary = String::from_utf8_lossy(&blast(&args).stdout).into_owned();
    assert!(summary.contains("limited by none"), "{summary}");
    assert!(!summary.contains("WARNING"), "{summary}");
}

/// A dead target at 1% CPU is the server's doing, not blast's: blast kept up.
#[test]
fn a_dead_target_limits_the_run_as_the_server() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let args = [&url[..], "--rate", "50", "--duration", "1s", "--cores", "1"];
    let (_, doc) = blast_json(&args);
    let open_loop = at(&doc, "open_loop");
    assert_eq!(
        text(&doc, "open_loop.limited_by"),
        "server",
        "{open_loop:#}"
    );
    assert!(flag(&doc, "open_loop.kept_up"), "{open_loop:#}");
    assert_eq!(warning_codes(&doc), ["limited_by_server"]);
    let summary = String::from_utf8_lossy(&blast(&args).stdout).into_owned();
    assert!(summary.contains("limited by server"), "{summary}");
    assert!(summary.contains("WARNING"), "{summary}");
}

/// A server that can do 50 req/s offered 100: requests in flight grow, completions fall
/// behind, blast is nearly idle and has connections to spare: the server is the limit.
#[test]
fn a_server_that_falls_behind_is_the_limit() {
    let server = one_at_a_time(Duration::from_millis(20));
    let (out, doc) = blast_json(&[
        &url(&server, "/"),
        "--rate",
        "100",
        "--duration",
        "2s",
        "--conns",
        "200",
        "--cores",
        "1",
        "--interval",
        "250ms",
    ]);
    assert_exit(&out, 0);
    let open_loop = at(&doc, "open_loop");
    assert_eq!(
        text(&doc, "open_loop.limited_by"),
        "server",
        "{open_loop:#}"
    );
    assert!(flag(&doc, "open_loop.kept_up"), "{open_loop:#}");
    assert!(
        warning_codes(&doc).contains(&"limited_by_server".to_string()),
        "{doc:#}"
    );
}

/// `--max-in-flight 2` against a server that takes 50 ms: blast cannot send 100 req/s,
/// and says which option to raise.
#[test]
fn a_full_max_in_flight_names_the_option_to_raise() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_millis(50)));
    let (_, doc) = blast_json(&[
        &server.url("/"),
        "--rate",
        "100",
        "--duration",
        "2s",
        "--conns",
        "10",
        "--max-in-flight",
        "2",
        "--cores",
        "1",
    ]);
    let open_loop = at(&doc, "open_loop");
    assert_eq!(
        text(&doc, "open_loop.limited_by"),
        "connections",
        "{open_loop:#}"
    );
    assert!(!flag(&doc, "open_loop.kept_up"), "{open_loop:#}");
    let warnings = at(&doc, "warnings").as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| text(w, "code") == "limited_by_connections"
                && text(w, "message").contains("--max-in-flight")),
        "{doc:#}"
    );
}

// ---------------------------------------------------------------------------------------
// LLM streams: buffered, compressed
// ---------------------------------------------------------------------------------------

/// An Ollama generate stream of `tokens` token lines and its final object.
fn ollama_stream(tokens: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..tokens {
        body.extend_from_slice(
            format!("{{\"response\":\"token{i} \",\"done\":false}}\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("{{\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"eval_count\":{tokens}}}\n")
            .as_bytes(),
    );
    body
}

/// Write `pieces` as chunks of a chunked 200 response, `gap` apart, under extra head `fields`.
fn write_chunked(
    stream: &mut TcpStream,
    fields: &str,
    pieces: &[&[u8]],
    gap: Duration,
) -> io::Result<()> {
    stream.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n{fields}\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )?;
    for piece in pieces {
        thread::sleep(gap);
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        stream.write_all(&chunk)?;
    }
    stream.write_all(b"0\r\n\r\n")
}

fn llm_run(server: &Acceptor, extra: &[&str]) -> serde_json::Value {
    let url = url(server, "/api/generate");
    let mut args = vec![
        &url[..],
        "--api",
        "ollama-generate",
        "--requests",
        "6",
        "--conns",
        "2",
        "--cores",
        "1",
        "--timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    blast_json(&args).1
}

/// A proxy that buffers the stream: the server's 8 tokens arrive in one piece after 50 ms.
/// TPOT would pass any `--slo tpot`; the report says why it means nothing.
#[test]
fn a_buffered_stream_is_called_out() {
    let body = ollama_stream(8);
    let server =
        serve_each(move |stream| write_chunked(stream, "", &[&body], Duration::from_millis(50)));
    let doc = llm_run(&server, &["--slo", "tpot=1ms"]);
    assert_eq!(num(&doc, "requests.ok"), 6, "{doc:#}");
    let warnings = at(&doc, "warnings").as_array().unwrap();
    let buffered = warnings
        .iter()
        .find(|w| text(w, "code") == "buffered_stream")
        .unwrap_or_else(|| panic!("no buffered_stream warning:\n{doc:#}"));
    assert!(text(buffered, "message").contains("6 of 6"), "{buffered:#}");

    // The same tokens paced 5 ms apart: streamed, nothing to say.
    let body = ollama_stream(8);
    let server = serve_each(move |stream| {
        let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
        write_chunked(stream, "", &lines, Duration::from_millis(5))
    });
    let doc = llm_run(&server, &[]);
    assert_eq!(num(&doc, "requests.ok"), 6, "{doc:#}");
    assert!(warning_codes(&doc).is_empty(), "{doc:#}");
}

/// Issue 12: behind a gzip-enabled proxy, `-H 'Accept-Encoding: gzip'` gets a gzip stream,
/// flushed event by event; blast decodes it, counts its tokens, and counts the compressed
/// bytes as read.
#[test]
fn gzip_streams_are_decoded_and_counted_on_the_wire() {
    use flate2::write::GzEncoder;
    use flate2::Compression;
    let body = ollama_stream(40);
    let server = serve_each(move |stream| {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let mut pieces = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            gz.write_all(line)?;
            gz.flush()?;
            pieces.push(std::mem::take(gz.get_mut()));
        }
        pieces.push(gz.finish()?);
        let pieces: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        write_chunked(
            stream,
            "Content-Encoding: gzip\r\n",
            &pieces,
            Duration::ZERO,
        )
    });
    let doc = llm_run(&server, &["-H", "Accept-Encoding: gzip"]);
    assert_no_errors(&doc);
    assert_eq!(num(&doc, "requests.ok"), 6, "{doc:#}");
    assert_eq!(num(&doc, "tokens.output"), 6 * 40, "{doc:#}");
    // The wire carried less than the decompressed streams.
    let plain = 6 * ollama_stream(40).len() as u64;
    assert!(num(&doc, "transfer.bytes_read") < plain, "{doc:#}");
}

/// A coding blast cannot decode fails the stream with a message and a warning naming it.
#[test]
fn an_unknown_content_encoding_is_named() {
    let server = serve_each(move |stream| {
        write_chunked(
            stream,
            "Content-Encoding: br\r\n",
            &[b"\x1b\x03\x00"],
            Duration::ZERO,
        )
    });
    let doc = llm_run(&server, &["-H", "Accept-Encoding: br"]);
    assert_eq!(num(&doc, "errors.stream"), 6, "{doc:#}");
    let stream = messages(&doc, "stream");
    assert!(
        stream.iter().any(|m| m.contains("Content-Encoding br")),
        "{stream:?}"
    );
    assert!(
        warning_codes(&doc).contains(&"undecoded_content_encoding".to_string()),
        "{doc:#}"
    );
}

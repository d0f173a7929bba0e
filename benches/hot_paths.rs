//! Micro-benchmarks of the pure parts on the hot path: response parsing in each framing,
//! LLM stream decoding, request rendering and histogram recording.
//!
//!     cargo bench --bench hot_paths

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use blast::http::request::{render, RequestSpec};
use blast::http::response::{BodySink, Progress, ResponseParser};
use blast::llm::{Api, FinalInfo, StreamDecoder, StreamObserver};
use blast::stats::{Hists, Metric};

/// Counts body bytes, as a sink that does something with them must at least read them.
struct Count(usize);

impl BodySink for Count {
    fn on_body(&mut self, data: &[u8]) {
        self.0 += data.len();
    }
}

/// Parse every response in `wire` (pipelined back to back), resetting between them.
fn parse_all(parser: &mut ResponseParser, wire: &[u8]) -> usize {
    let (mut pos, mut n, mut sink) = (0, 0, Count(0));
    while pos < wire.len() {
        match parser
            .feed(&wire[pos..], &mut sink)
            .expect("valid response")
        {
            Progress::Complete { consumed, .. } => {
                pos += consumed;
                n += 1;
                parser.reset(false);
            }
            Progress::Partial { .. } => unreachable!("whole responses only"),
        }
    }
    n + sink.0
}

fn responses(c: &mut Criterion) {
    let content_length = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 01:00:00 GMT\r\n\
        Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n";
    let mut chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let event = "{\"response\":\"word \",\"done\":false}\n";
    for _ in 0..32 {
        chunked.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");

    let mut g = c.benchmark_group("parse");
    for (name, one) in [
        ("content_length", &content_length[..]),
        ("chunked_32", &chunked[..]),
    ] {
        let wire = one.repeat(16);
        g.throughput(Throughput::Elements(16));
        let mut parser = ResponseParser::new();
        g.bench_function(name, |b| {
            b.iter(|| parse_all(&mut parser, black_box(&wire)))
        });
    }
    g.finish();
}

struct Tokens(u64);

impl StreamObserver for Tokens {
    fn on_content(&mut self) {
        self.0 += 1;
    }
    fn on_final(&mut self, _: &FinalInfo) {}
}

fn streams(c: &mut Criterion) {
    let mut ndjson = String::new();
    for i in 0..64 {
        ndjson.push_str(&format!(
            "{{\"model\":\"llama3.2\",\"response\":\"tok{i} \",\"done\":false}}\n"
        ));
    }
    ndjson.push_str(
        "{\"done\":true,\"done_reason\":\"stop\",\"eval_count\":64,\"eval_duration\":1000}\n",
    );
    let mut sse = String::new();
    for i in 0..64 {
        sse.push_str(&format!(
            "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    sse.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");

    let mut g = c.benchmark_group("decode_64_tokens");
    g.throughput(Throughput::Elements(64));
    for (name, api, body) in [
        ("ndjson", Api::OllamaGenerate, ndjson),
        ("sse", Api::OpenaiChat, sse),
    ] {
        let mut decoder = StreamDecoder::new(api, true);
        g.bench_function(name, |b| {
            b.iter(|| {
                decoder.reset();
                let mut seen = Tokens(0);
                // As a server sends it: one piece per event, as the chunk decoder hands it over.
                for line in body.split_inclusive('\n') {
                    decoder.feed(black_box(line.as_bytes()), &mut seen);
                }
                decoder.finish(&mut seen);
                seen.0
            })
        });
    }
    g.finish();
}

fn requests_and_histograms(c: &mut Criterion) {
    let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let body = br#"{"model":"llama3.2","prompt":"Why is the sky blue?","stream":true}"#;
    c.bench_function("render_request", |b| {
        b.iter(|| {
            render(black_box(&RequestSpec {
                method: "POST",
                path: "/api/generate",
                host: "localhost:11435",
                headers: &headers,
                body,
            }))
        })
    });
    let mut hists = Hists::new(&[Metric::Latency]);
    let mut us = 1u64;
    c.bench_function("record_latency", |b| {
        b.iter(|| {
            us = us * 7 % 1_000_003;
            hists.record(Metric::Latency, black_box(Duration::from_micros(us)));
        })
    });
}

criterion_group!(benches, responses, streams, requests_and_histograms);
criterion_main!(benches);

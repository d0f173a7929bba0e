//! Properties checked by the fuzz targets (`fuzz/fuzz_targets/`) and by the corpus replay
//! under plain `cargo test` (`tests/fuzz_corpus.rs`, which includes this file by path), so
//! the two cannot drift apart. Each check returns `Err(description)` when a property breaks;
//! a panic inside the code under test is a finding too.
//!
//! Input layout, the same for every target: `[mode, n, len_1 .. len_n, payload ..]`.
//! `mode` picks options (HEAD requests for the parser; API options for the decoders); the
//! `n` (mod 8) bytes after it are the lengths of the reads the payload is cut into
//! (cycled; 0 means an empty read). The payload is also fed whole and byte by byte, and all
//! runs must give the same transcript.

use blast::http::response::{BodySink, ParseError, Progress, ResponseHead, ResponseParser};
use blast::llm::{Api, FinalInfo, StreamDecoder, StreamEnd, StreamObserver};

/// Splits a fuzz input into (mode byte, read lengths, payload).
pub fn split_input(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    let n = data.get(1).map_or(0, |&b| (b % 8) as usize);
    let rest = data.get(2..).unwrap_or(&[]);
    let n = n.min(rest.len());
    (mode, &rest[..n], &rest[n..])
}

/// The ways a payload is cut into reads: whole, byte by byte, and by the fuzzer's lengths.
fn cuttings<'a>(payload: &'a [u8], lens: &[u8]) -> Vec<(String, Vec<&'a [u8]>)> {
    let mut out = vec![
        ("whole".to_string(), vec![payload]),
        ("byte by byte".to_string(), payload.chunks(1).collect()),
    ];
    if !lens.is_empty() {
        let mut pieces = Vec::new();
        let mut rest = payload;
        let mut i = 0;
        // Empty reads are kept, but bounded so an all-zero length list still ends.
        let mut empties = 0;
        while !rest.is_empty() {
            let n = (lens[i % lens.len()] as usize).min(rest.len());
            i += 1;
            if n == 0 {
                empties += 1;
                if empties > 64 {
                    pieces.push(rest);
                    break;
                }
            }
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        out.push((format!("reads of {lens:?}"), pieces));
    }
    out
}

// ---------------------------------------------------------------- response parser

/// What a connection loop observes while parsing a byte stream of pipelined responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParserEvent {
    Head(ResponseHead),
    /// Body bytes delivered to the sink, adjacent deliveries merged.
    Body(Vec<u8>),
    /// A response completed after `end` bytes of the stream.
    Complete {
        head: ResponseHead,
        end: usize,
    },
    Error(ParseError),
    /// All bytes were fed without an error: `consumed` bytes of the stream were used, and
    /// `in_progress` is what the parser said (decides idle close vs truncation).
    Drained {
        consumed: usize,
        in_progress: bool,
    },
    /// What `on_eof` said then.
    Eof(Result<Option<ResponseHead>, ParseError>),
}

#[derive(Default)]
struct Tap(Vec<ParserEvent>);

impl BodySink for Tap {
    fn on_head(&mut self, head: &ResponseHead) {
        self.0.push(ParserEvent::Head(*head));
    }
    fn on_body(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(ParserEvent::Body(b)) = self.0.last_mut() {
            b.extend_from_slice(data);
        } else {
            self.0.push(ParserEvent::Body(data.to_vec()));
        }
    }
}

/// Feeds `pieces` like the engine's connection loop: unconsumed bytes are kept and presented
/// again with the next read; after each complete response the parser is reset (HEAD or not
/// per bit `i % 8` of `head_mask` for the i-th response) and the rest is fed at once; after
/// the last read comes `on_eof`. Checks the per-call contract on the way.
pub fn parser_transcript(pieces: &[&[u8]], head_mask: u8) -> Result<Vec<ParserEvent>, String> {
    let mut p = ResponseParser::new();
    let mut responses = 0usize;
    p.reset(head_mask & 1 != 0);
    let mut tap = Tap::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed_total = 0usize;
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    for piece in pieces {
        pending.extend_from_slice(piece);
        // Each round either completes a response (which consumes at least one byte) or
        // ends the read, so this only trips on a parser that stops making progress.
        let mut budget = total + 2;
        loop {
            if budget == 0 {
                return Err("no progress: a response completed without consuming".into());
            }
            budget -= 1;
            match p.feed(&pending, &mut tap) {
                Err(e) => {
                    tap.0.push(ParserEvent::Error(e));
                    return Ok(tap.0);
                }
                Ok(Progress::Partial { consumed }) => {
                    if consumed > pending.len() {
                        return Err(format!("consumed {consumed} of {}", pending.len()));
                    }
                    pending.drain(..consumed);
                    consumed_total += consumed;
                    break;
                }
                Ok(Progress::Complete { consumed, head }) => {
                    if consumed == 0 || consumed > pending.len() {
                        return Err(format!("complete after {consumed} of {}", pending.len()));
                    }
                    if p.in_progress() {
                        return Err("in progress after a complete response".into());
                    }
                    pending.drain(..consumed);
                    consumed_total += consumed;
                    tap.0.push(ParserEvent::Complete {
                        head,
                        end: consumed_total,
                    });
                    responses += 1;
                    p.reset(head_mask >> (responses % 8) & 1 != 0);
                }
            }
        }
    }
    tap.0.push(ParserEvent::Drained {
        consumed: consumed_total,
        in_progress: p.in_progress(),
    });
    let eof = p.on_eof(&mut tap);
    tap.0.push(ParserEvent::Eof(eof));
    check_heads(&tap.0)?;
    Ok(tap.0)
}

/// Every completed response had exactly one head, reported before its body, and the one the
/// completion names.
fn check_heads(events: &[ParserEvent]) -> Result<(), String> {
    let mut head: Option<ResponseHead> = None;
    for ev in events {
        match ev {
            ParserEvent::Head(h) if head.is_some() => return Err(format!("second head {h:?}")),
            ParserEvent::Head(h) => head = Some(*h),
            ParserEvent::Body(_) if head.is_none() => return Err("body before head".into()),
            ParserEvent::Complete { head: h, .. } | ParserEvent::Eof(Ok(Some(h))) => {
                let seen = head.take();
                if seen != Some(*h) {
                    return Err(format!("completed {h:?} but the sink saw {seen:?}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The known head re-scan bug: an invalid head byte that arrives in a read holding no LF is
/// not looked at, so the read-whole run fails the head (errors.parse) while a split run waits
/// and then sees the close (errors.closed, or a timeout). Everything before agrees.
pub fn is_known_head_rescan_bug(whole: &[ParserEvent], split: &[ParserEvent]) -> bool {
    match (whole, split) {
        (
            [w @ .., ParserEvent::Error(ParseError::Head(_))],
            [s @ .., ParserEvent::Drained {
                in_progress: true, ..
            }, ParserEvent::Eof(Err(ParseError::UnexpectedEof))],
        ) => w == s,
        _ => false,
    }
}

/// The parser's property: the transcript is the same however the stream is cut into reads.
/// With `skip_known`, differences that are the known head re-scan bug are let through.
pub fn check_parser(data: &[u8], skip_known: bool) -> Result<(), String> {
    let (head_mask, lens, payload) = split_input(data);
    let mut first: Option<(String, Vec<ParserEvent>)> = None;
    for (what, pieces) in cuttings(payload, lens) {
        let got = parser_transcript(&pieces, head_mask).map_err(|e| format!("{what}: {e}"))?;
        match &first {
            None => first = Some((what, got)),
            Some((_, t0)) if skip_known && is_known_head_rescan_bug(t0, &got) => {}
            Some((w0, t0)) if *t0 != got => {
                return Err(format!("{w0} gave\n  {t0:?}\nbut {what} gave\n  {got:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- stream decoders

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamEvent {
    Content,
    Final(FinalInfo),
}

#[derive(Default)]
struct Rec(Vec<StreamEvent>);

impl StreamObserver for Rec {
    fn on_content(&mut self) {
        self.0.push(StreamEvent::Content);
    }
    fn on_final(&mut self, f: &FinalInfo) {
        self.0.push(StreamEvent::Final(*f));
    }
}

/// Mode bits for the decoders: bit 0 clear = streaming; bit 1 set = a small event size
/// limit (taken from the upper bits), so the oversized-event paths are reached too.
fn decoder(api: Api, mode: u8) -> StreamDecoder {
    let dec = StreamDecoder::new(api, mode & 1 == 0);
    if mode & 2 != 0 {
        dec.with_max_event_len((mode >> 2) as usize * 4)
    } else {
        dec
    }
}

/// One decoder's property: the events and the end are the same however the body is cut,
/// with the decoder reused through `reset` (so leftover state would show) — and `finish`
/// a second time changes nothing.
pub fn check_stream(api: Api, data: &[u8]) -> Result<(), String> {
    let (mode, lens, payload) = split_input(data);
    let mut dec = decoder(api, mode);
    let mut first: Option<(String, (Vec<StreamEvent>, StreamEnd))> = None;
    for (what, pieces) in cuttings(payload, lens) {
        dec.reset();
        let mut rec = Rec::default();
        for p in &pieces {
            dec.feed(p, &mut rec);
        }
        let end = dec.finish(&mut rec);
        let mut again = Rec::default();
        if dec.finish(&mut again) != end || !again.0.is_empty() {
            return Err(format!("{what}: a second finish differs"));
        }
        let finals = rec.0.iter().filter(|e| matches!(e, StreamEvent::Final(_)));
        if finals.count() > 1 {
            return Err(format!("{what}: more than one final: {:?}", rec.0));
        }
        let got = (rec.0, end);
        match &first {
            None => first = Some((what, got)),
            Some((w0, t0)) if *t0 != got => {
                return Err(format!("{w0} gave\n  {t0:?}\nbut {what} gave\n  {got:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The fuzz target names, as directories under fuzz/corpus and fuzz/artifacts.
pub const TARGETS: [&str; 5] = [
    "response_parser",
    "stream_ollama_generate",
    "stream_ollama_chat",
    "stream_openai_chat",
    "stream_openai_completions",
];

/// Runs the property of the target named `target` on one input.
pub fn check_target(target: &str, data: &[u8], skip_known: bool) -> Result<(), String> {
    match target {
        "response_parser" => check_parser(data, skip_known),
        "stream_ollama_generate" => check_stream(Api::OllamaGenerate, data),
        "stream_ollama_chat" => check_stream(Api::OllamaChat, data),
        "stream_openai_chat" => check_stream(Api::OpenaiChat, data),
        "stream_openai_completions" => check_stream(Api::OpenaiCompletions, data),
        _ => Err(format!("unknown target {target}")),
    }
}

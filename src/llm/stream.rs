//! Incremental decoding of response bodies: Ollama NDJSON, OpenAI SSE, and
//! whole non-streaming JSON bodies.
//!
//! Hot path: events are parsed straight from the caller's slice when a line
//! lies inside one piece; only a line spanning pieces is copied into the one
//! reusable line buffer. Event structs keep no text: [`Text`] only records
//! whether a string is non-empty, so no event allocates (serde_json uses a
//! scratch buffer only for strings with escapes).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::Api;

/// Longest event (line, or whole non-streaming body) the decoder buffers.
pub const MAX_EVENT_LEN: usize = 1 << 20;

/// Receives what the decoder finds, in body order.
pub trait StreamObserver {
    /// An event carrying non-empty generated text (a "token event"): one call
    /// per event, and one for a whole non-streaming body. The server's token
    /// count comes through [`StreamObserver::on_final`].
    fn on_content(&mut self);
    /// Server-side figures, gathered from the final object / usage chunk.
    /// Called at most once per response, and only if some figure was seen.
    fn on_final(&mut self, f: &FinalInfo);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneReason {
    Stop,
    Length,
    Other,
}

#[derive(Default, Debug, Clone, Copy, PartialEq)]
pub struct FinalInfo {
    /// Ollama `eval_count` / OpenAI `usage.completion_tokens`.
    pub output_tokens: Option<u64>,
    /// Ollama `prompt_eval_count` / OpenAI `usage.prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// Ollama durations, in nanoseconds.
    pub total_ns: Option<u64>,
    pub load_ns: Option<u64>,
    pub prompt_eval_ns: Option<u64>,
    pub eval_ns: Option<u64>,
    /// Ollama `done_reason` / OpenAI `finish_reason`.
    pub done_reason: Option<DoneReason>,
}

impl FinalInfo {
    pub fn is_empty(&self) -> bool {
        *self == FinalInfo::default()
    }

    /// Later figures win: servers that repeat usage on every chunk (vLLM's
    /// continuous usage stats) end with the complete one.
    fn merge(&mut self, o: &FinalInfo) {
        fn m<T: Copy>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        m(&mut self.output_tokens, o.output_tokens);
        m(&mut self.prompt_tokens, o.prompt_tokens);
        m(&mut self.total_ns, o.total_ns);
        m(&mut self.load_ns, o.load_ns);
        m(&mut self.prompt_eval_ns, o.prompt_eval_ns);
        m(&mut self.eval_ns, o.eval_ns);
        m(&mut self.done_reason, o.done_reason);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the server reported an error inside the response body")]
    InStreamError,
    #[error("malformed JSON in the response body")]
    BadJson,
    #[error("an event in the response body exceeded the size limit")]
    EventTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server said it was done (`"done":true`, `[DONE]`, a finish_reason,
    /// or a whole non-streaming body).
    Complete,
    /// The body ended before the server said it was done.
    Truncated,
    /// The first error found; decoding went on after it.
    Error(StreamError),
}

pub struct StreamDecoder {
    api: Api,
    streaming: bool,
    max_event_len: usize,
    /// Start of a line (or the non-streaming body) that spans pieces.
    buf: Vec<u8>,
    /// Dropping the rest of an oversized line, up to its `\n`.
    skipping: bool,
    /// `[DONE]` or `"done":true` seen (or finish called): ignore further data.
    ended: bool,
    complete: bool,
    /// OpenAI: a non-null finish_reason was seen.
    finish_seen: bool,
    error: Option<StreamError>,
    final_info: FinalInfo,
    final_sent: bool,
}

impl StreamDecoder {
    pub fn new(api: Api, streaming: bool) -> Self {
        StreamDecoder {
            api,
            streaming,
            max_event_len: MAX_EVENT_LEN,
            buf: Vec::new(),
            skipping: false,
            ended: false,
            complete: false,
            finish_seen: false,
            error: None,
            final_info: FinalInfo::default(),
            final_sent: false,
        }
    }

    /// Overrides [`MAX_EVENT_LEN`].
    pub fn with_max_event_len(mut self, max: usize) -> Self {
        self.max_event_len = max;
        self
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn streaming(&self) -> bool {
        self.streaming
    }

    /// Prepares for the next response; keeps the buffer's capacity.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.skipping = false;
        self.ended = false;
        self.complete = false;
        self.finish_seen = false;
        self.error = None;
        self.final_info = FinalInfo::default();
        self.final_sent = false;
    }

    /// Feeds the next piece of decoded body; calls `out` for each complete event.
    pub fn feed<O: StreamObserver>(&mut self, mut data: &[u8], out: &mut O) {
        if self.ended {
            return;
        }
        if !self.streaming {
            // One JSON document: nothing can be decoded before the body ends.
            self.append_partial(data);
            return;
        }
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let line = &data[..i];
            data = &data[i + 1..];
            if self.skipping {
                self.skipping = false;
            } else if self.buf.is_empty() {
                if line.len() > self.max_event_len {
                    self.fail(StreamError::EventTooLarge);
                } else {
                    self.line(line, false, out);
                }
            } else if self.buf.len() + line.len() > self.max_event_len {
                self.fail(StreamError::EventTooLarge);
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(line);
                let buf = std::mem::take(&mut self.buf);
                self.line(&buf, false, out);
                self.buf = buf;
                self.buf.clear();
            }
            if self.ended {
                return;
            }
        }
        self.append_partial(data);
    }

    /// The body ended: decodes a final unterminated line (or the whole
    /// non-streaming body) and says how the stream ended.
    pub fn finish<O: StreamObserver>(&mut self, out: &mut O) -> StreamEnd {
        if !self.ended && !self.skipping && !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            if self.streaming {
                self.line(&buf, true, out);
            } else {
                self.whole_body(&buf, out);
            }
            self.buf = buf;
        }
        self.buf.clear();
        self.skipping = false;
        self.ended = true;
        self.emit_final(out);
        if let Some(e) = self.error {
            StreamEnd::Error(e)
        } else if self.complete || self.finish_seen {
            StreamEnd::Complete
        } else {
            StreamEnd::Truncated
        }
    }

    fn append_partial(&mut self, data: &[u8]) {
        if self.skipping || data.is_empty() {
            return;
        }
        if self.buf.len() + data.len() > self.max_event_len {
            self.fail(StreamError::EventTooLarge);
            self.buf.clear();
            self.skipping = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn fail(&mut self, e: StreamError) {
        self.error.get_or_insert(e);
    }

    fn emit_final<O: StreamObserver>(&mut self, out: &mut O) {
        if !self.final_sent && !self.final_info.is_empty() {
            self.final_sent = true;
            out.on_final(&self.final_info);
        }
    }

    /// One line of a streaming body, without its `\n`. `at_eof`: the line was
    /// cut by the end of the body, so a JSON document ending early means
    /// truncation, not malformed JSON.
    fn line<O: StreamObserver>(&mut self, line: &[u8], at_eof: bool, out: &mut O) {
        if self.api.is_ollama() {
            let line = line.trim_ascii();
            if !line.is_empty() {
                self.json_event(line, at_eof, out);
            }
            return;
        }
        // SSE. Each `data:` line is decoded on its own rather than joined with
        // the event's other data lines: OpenAI-compatible servers put one JSON
        // object on one line, and this avoids copying every event. `event:`,
        // `id:`, `retry:`, `:` comments and blank separators carry nothing we use.
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = payload.trim_ascii();
        if payload.is_empty() {
            return;
        }
        if payload == b"[DONE]" {
            self.complete = true;
            self.ended = true;
            self.emit_final(out);
            return;
        }
        if at_eof && b"[DONE]".starts_with(payload) {
            return;
        }
        self.json_event(payload, at_eof, out);
    }

    fn json_event<O: StreamObserver>(&mut self, json: &[u8], at_eof: bool, out: &mut O) {
        let res = if self.api.is_ollama() {
            serde_json::from_slice::<OllamaEvent>(json).map(|ev| self.ollama_event(&ev, out))
        } else {
            serde_json::from_slice::<OpenaiEvent>(json).map(|ev| self.openai_event(&ev, out))
        };
        match res {
            Ok(()) => {}
            Err(e) if at_eof && e.is_eof() => {}
            Err(_) => self.fail(StreamError::BadJson),
        }
    }

    fn whole_body<O: StreamObserver>(&mut self, body: &[u8], out: &mut O) {
        let res = if self.api.is_ollama() {
            serde_json::from_slice::<OllamaEvent>(body).map(|ev| self.ollama_event(&ev, out))
        } else {
            serde_json::from_slice::<OpenaiEvent>(body).map(|ev| self.openai_event(&ev, out))
        };
        match res {
            Ok(()) => self.complete = self.error.is_none(),
            // A body cut short (including an empty one) is a truncation.
            Err(e) if e.is_eof() => {}
            Err(_) => self.fail(StreamError::BadJson),
        }
    }

    fn ollama_event<O: StreamObserver>(&mut self, ev: &OllamaEvent, out: &mut O) {
        if ev.error.is_some() {
            self.fail(StreamError::InStreamError);
            return;
        }
        let msg = ev.message.as_ref();
        // Reasoning models stream `thinking` before `response`/`content`; it is
        // generated text all the same, and counts for time to first token.
        if text(&ev.response) || text(&ev.thinking) || msg.is_some_and(Message::has_text) {
            out.on_content();
        }
        self.final_info.merge(&FinalInfo {
            output_tokens: ev.eval_count,
            prompt_tokens: ev.prompt_eval_count,
            total_ns: ev.total_duration,
            load_ns: ev.load_duration,
            prompt_eval_ns: ev.prompt_eval_duration,
            eval_ns: ev.eval_duration,
            done_reason: ev.done_reason,
        });
        if ev.done {
            self.complete = true;
            self.ended = true;
            self.emit_final(out);
        }
    }

    fn openai_event<O: StreamObserver>(&mut self, ev: &OpenaiEvent, out: &mut O) {
        if ev.error.is_some() {
            self.fail(StreamError::InStreamError);
            return;
        }
        if let Some(First(Some(c))) = &ev.choices {
            if text(&c.text)
                || c.delta.as_ref().is_some_and(Message::has_text)
                || c.message.as_ref().is_some_and(Message::has_text)
            {
                out.on_content();
            }
            if c.finish_reason.is_some() {
                self.finish_seen = true;
                self.final_info.done_reason = c.finish_reason;
            }
        }
        if let Some(u) = &ev.usage {
            self.final_info.merge(&FinalInfo {
                output_tokens: u.completion_tokens,
                prompt_tokens: u.prompt_tokens,
                ..FinalInfo::default()
            });
        }
    }
}

// ---- wire structs: unknown fields are skipped by serde without allocating ----

#[derive(Deserialize)]
struct OllamaEvent {
    response: Option<Text>,
    thinking: Option<Text>,
    message: Option<Message>,
    #[serde(default)]
    done: bool,
    done_reason: Option<DoneReason>,
    eval_count: Option<u64>,
    prompt_eval_count: Option<u64>,
    total_duration: Option<u64>,
    load_duration: Option<u64>,
    prompt_eval_duration: Option<u64>,
    eval_duration: Option<u64>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct OpenaiEvent {
    choices: Option<First<Choice>>,
    usage: Option<Usage>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice {
    /// Completions.
    text: Option<Text>,
    /// Streaming chat.
    delta: Option<Message>,
    /// Non-streaming chat.
    message: Option<Message>,
    finish_reason: Option<DoneReason>,
}

/// An Ollama chat message or an OpenAI delta/message. The reasoning fields
/// are the ones Ollama, vLLM (`reasoning_content`) and others
/// (`reasoning`) use for a reasoning model's thinking text.
#[derive(Deserialize)]
struct Message {
    content: Option<Text>,
    thinking: Option<Text>,
    reasoning_content: Option<Text>,
    reasoning: Option<Text>,
}

impl Message {
    fn has_text(&self) -> bool {
        text(&self.content)
            || text(&self.thinking)
            || text(&self.reasoning_content)
            || text(&self.reasoning)
    }
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
}

fn text(t: &Option<Text>) -> bool {
    matches!(t, Some(Text(true)))
}

/// A JSON string, reduced to whether it is non-empty once decoded. Keeping
/// only that (rather than a borrowed `&str`/`Cow`) needs no lifetime and
/// cannot allocate on our side.
struct Text(bool);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(!s.is_empty()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for DoneReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DoneReason;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finish reason string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DoneReason, E> {
                Ok(match s {
                    "stop" => DoneReason::Stop,
                    "length" => DoneReason::Length,
                    _ => DoneReason::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The first element of a JSON array; the rest are skipped. Avoids the `Vec`
/// that deserialising `choices` as a sequence would allocate.
struct First<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element::<T>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Ev {
        Content,
        Final(FinalInfo),
    }
    use Ev::Content;

    #[derive(Default)]
    struct Rec(Vec<Ev>);

    impl StreamObserver for Rec {
        fn on_content(&mut self) {
            self.0.push(Ev::Content);
        }
        fn on_final(&mut self, f: &FinalInfo) {
            self.0.push(Ev::Final(*f));
        }
    }

    type Outcome = (Vec<Ev>, StreamEnd);

    fn run(dec: &mut StreamDecoder, pieces: &[&[u8]]) -> Outcome {
        dec.reset();
        let mut rec = Rec::default();
        for p in pieces {
            dec.feed(p, &mut rec);
        }
        let end = dec.finish(&mut rec);
        (rec.0, end)
    }

    /// Decodes `body` whole, split in two at every byte boundary, byte by byte
    /// and in small chunks, with one decoder reused through `reset`; all must
    /// agree.
    fn check_with(dec: &mut StreamDecoder, body: &[u8]) -> Outcome {
        let whole = run(dec, &[body]);
        if dec.streaming && body.ends_with(b"\n") {
            assert_eq!(
                dec.buf.capacity(),
                0,
                "whole lines fed in one piece must not use the line buffer"
            );
        }
        for i in 0..=body.len() {
            let got = run(dec, &[&body[..i], &body[i..]]);
            assert_eq!(got, whole, "split at byte {i}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(dec, &bytes), whole, "byte by byte");
        for n in [3, 7, 64] {
            let chunks: Vec<&[u8]> = body.chunks(n).collect();
            assert_eq!(run(dec, &chunks), whole, "chunks of {n}");
        }
        let mut with_empty: Vec<&[u8]> = vec![b""];
        for c in body.chunks(5) {
            with_empty.extend([c, b""]);
        }
        assert_eq!(run(dec, &with_empty), whole, "with empty pieces");
        whole
    }

    fn check(api: Api, streaming: bool, body: &str) -> Outcome {
        check_with(&mut StreamDecoder::new(api, streaming), body.as_bytes())
    }

    fn contents(n: usize) -> Vec<Ev> {
        vec![Content; n]
    }

    fn with_final(mut evs: Vec<Ev>, f: FinalInfo) -> Vec<Ev> {
        evs.push(Ev::Final(f));
        evs
    }

    // ---------------- Ollama ----------------

    const OLLAMA_FINAL: FinalInfo = FinalInfo {
        output_tokens: Some(290),
        prompt_tokens: Some(26),
        total_ns: Some(5043500667),
        load_ns: Some(5025959),
        prompt_eval_ns: Some(325953000),
        eval_ns: Some(4709213000),
        done_reason: Some(DoneReason::Stop),
    };

    const OLLAMA_GENERATE: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.385406455-07:00","response":"The","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.4Z","response":" sky","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.5Z","response":"","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.6Z","response":"\n","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.7Z","response":"caf\u00e9 \"x\"","done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2024-08-04T08:52:19.8Z","response":"","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}"#,
        "\n",
    );

    #[test]
    fn ollama_generate_stream() {
        let got = check(Api::OllamaGenerate, true, OLLAMA_GENERATE);
        assert_eq!(
            got,
            (with_final(contents(4), OLLAMA_FINAL), StreamEnd::Complete)
        );
    }

    #[test]
    fn ollama_chat_stream_crlf_and_blank_lines() {
        let body = concat!(
            r#"{"model":"llama3.2","created_at":"t","message":{"role":"assistant","content":"Hello"},"done":false}"#,
            "\r\n",
            "\r\n",
            r#"{"model":"llama3.2","created_at":"t","message":{"role":"assistant","content":""},"done":false}"#,
            "\r\n",
            "  \n",
            r#"{"model":"llama3.2","created_at":"t","message":{"role":"assistant","content":"\u00e9"},"done":false}"#,
            "\r\n",
            r#"{"model":"llama3.2","created_at":"t","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":10,"load_duration":1,"prompt_eval_count":3,"prompt_eval_duration":4,"eval_count":2,"eval_duration":5}"#,
            "\r\n",
        );
        let f = FinalInfo {
            output_tokens: Some(2),
            prompt_tokens: Some(3),
            total_ns: Some(10),
            load_ns: Some(1),
            prompt_eval_ns: Some(4),
            eval_ns: Some(5),
            done_reason: Some(DoneReason::Length),
        };
        let got = check(Api::OllamaChat, true, body);
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
    }

    #[test]
    fn ollama_thinking_counts_as_content() {
        let body = concat!(
            r#"{"message":{"role":"assistant","content":"","thinking":"Hmm"},"done":false}"#,
            "\n",
            r#"{"message":{"role":"assistant","content":"Yes"},"done":false}"#,
            "\n",
            r#"{"response":"","thinking":"so","done":false}"#,
            "\n",
            r#"{"message":{"role":"assistant","content":""},"done":true,"eval_count":3}"#,
            "\n",
        );
        let f = FinalInfo {
            output_tokens: Some(3),
            ..FinalInfo::default()
        };
        let got = check(Api::OllamaChat, true, body);
        assert_eq!(got, (with_final(contents(3), f), StreamEnd::Complete));
    }

    #[test]
    fn ollama_final_line_without_newline() {
        let body = OLLAMA_GENERATE.trim_end();
        let got = check(Api::OllamaGenerate, true, body);
        assert_eq!(
            got,
            (with_final(contents(4), OLLAMA_FINAL), StreamEnd::Complete)
        );
    }

    #[test]
    fn ollama_data_after_done_is_ignored() {
        let body = format!("{OLLAMA_GENERATE}{{\"response\":\"late\",\"done\":false}}\nnot json\n");
        let got = check(Api::OllamaGenerate, true, &body);
        assert_eq!(
            got,
            (with_final(contents(4), OLLAMA_FINAL), StreamEnd::Complete)
        );
    }

    #[test]
    fn ollama_truncated() {
        // Every proper prefix of the stream is a truncation, never BadJson:
        // either no done object, or the last line is cut short.
        let last_line_start = OLLAMA_GENERATE.trim_end().rfind('\n').unwrap() + 1;
        let mut dec = StreamDecoder::new(Api::OllamaGenerate, true);
        for cut in 0..last_line_start + 20 {
            let (evs, end) = run(&mut dec, &[&OLLAMA_GENERATE.as_bytes()[..cut]]);
            assert_eq!(end, StreamEnd::Truncated, "cut at {cut}");
            assert!(evs.iter().all(|e| *e == Content), "no final at cut {cut}");
        }
        let got = check(
            Api::OllamaGenerate,
            true,
            &OLLAMA_GENERATE[..last_line_start],
        );
        assert_eq!(got, (contents(4), StreamEnd::Truncated));
        let got = check(
            Api::OllamaGenerate,
            true,
            &OLLAMA_GENERATE[..last_line_start + 40],
        );
        assert_eq!(got, (contents(4), StreamEnd::Truncated));
        assert_eq!(
            check(Api::OllamaChat, true, ""),
            (vec![], StreamEnd::Truncated)
        );
    }

    #[test]
    fn ollama_in_stream_error() {
        let body = concat!(
            r#"{"response":"a","done":false}"#,
            "\n",
            r#"{"error":"an error was encountered while running the model"}"#,
            "\n",
        );
        let got = check(Api::OllamaGenerate, true, body);
        assert_eq!(
            got,
            (contents(1), StreamEnd::Error(StreamError::InStreamError))
        );

        // The error is remembered; decoding goes on, and it wins over done.
        let body = concat!(
            r#"{"error":"boom"}"#,
            "\n",
            r#"{"response":"a","done":false}"#,
            "\n",
            r#"{"response":"","done":true,"eval_count":1}"#,
            "\n",
        );
        let f = FinalInfo {
            output_tokens: Some(1),
            ..FinalInfo::default()
        };
        let got = check(Api::OllamaGenerate, true, body);
        assert_eq!(
            got,
            (
                with_final(contents(1), f),
                StreamEnd::Error(StreamError::InStreamError)
            )
        );
    }

    #[test]
    fn ollama_bad_json() {
        let body = concat!(
            r#"{"response":"a","done":false}"#,
            "\n",
            r#"{"response":"b",}"#,
            "\n",
            r#"{"response":"c","done":false}"#,
            "\n",
            r#"{"response":"","done":true}"#,
            "\n",
        );
        let got = check(Api::OllamaGenerate, true, body);
        assert_eq!(got, (contents(2), StreamEnd::Error(StreamError::BadJson)));

        for bad in [
            "not json\n",
            "{\"response\":\n",
            "[1,2]\n",
            "42\n",
            "{\"response\":7}\n",
            "{} {}\n",
        ] {
            let got = check(Api::OllamaChat, true, bad);
            assert_eq!(
                got,
                (vec![], StreamEnd::Error(StreamError::BadJson)),
                "{bad:?}"
            );
        }
        // A cut line at the end of the body is truncation, but garbage is not.
        let got = check(
            Api::OllamaChat,
            true,
            "{\"message\":{\"content\":\"x\"},\"done\":false}\nnope",
        );
        assert_eq!(got, (contents(1), StreamEnd::Error(StreamError::BadJson)));
    }

    // ---------------- OpenAI SSE ----------------

    const OPENAI_CHAT: &str = concat!(
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"\n\u00e9"},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":null},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":12,"total_tokens":14,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    const OPENAI_FINAL: FinalInfo = FinalInfo {
        output_tokens: Some(2),
        prompt_tokens: Some(12),
        total_ns: None,
        load_ns: None,
        prompt_eval_ns: None,
        eval_ns: None,
        done_reason: Some(DoneReason::Length),
    };

    #[test]
    fn openai_chat_stream_with_usage_and_done() {
        let got = check(Api::OpenaiChat, true, OPENAI_CHAT);
        assert_eq!(
            got,
            (with_final(contents(2), OPENAI_FINAL), StreamEnd::Complete)
        );
    }

    #[test]
    fn openai_role_only_first_chunk_is_not_content() {
        let body = concat!(
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(
            check(Api::OpenaiChat, true, body),
            (vec![], StreamEnd::Complete)
        );
    }

    #[test]
    fn openai_data_after_done_is_ignored() {
        let body = format!("{OPENAI_CHAT}data: {{\"choices\":[{{\"delta\":{{\"content\":\"x\"}}}}]}}\n\ndata: {{bad\n\n");
        let got = check(Api::OpenaiChat, true, &body);
        assert_eq!(
            got,
            (with_final(contents(2), OPENAI_FINAL), StreamEnd::Complete)
        );
    }

    #[test]
    fn llama_stack_style_without_done() {
        // No space after `data:`, CRLF, no [DONE], no trailing newline: the
        // finish_reason makes it complete.
        let body = concat!(
            r#"data:{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"},"finish_reason":null}]}"#,
            "\r\n\r\n",
            r#"data:{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}"#,
            "\r\n\r\n",
            r#"data:{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}"#,
        );
        let f = FinalInfo {
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
        let got = check(Api::OpenaiChat, true, &format!("{body}\r\n\r\n"));
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
    }

    #[test]
    fn sse_comments_and_other_fields() {
        let body = concat!(
            ": keep-alive\n\n",
            "event: message\n",
            "id: 1\n",
            "retry: 1000\n",
            r#"data: {"choices":[{"index":0,"text":"one","finish_reason":null}]}"#,
            "\n\n",
            ":comment\r\n",
            "event: completion\r\n",
            r#"data:{"choices":[{"index":0,"text":"two","finish_reason":null}]}"#,
            "\r\n",
            "\r\n",
            "data:\n",
            "data\n",
            "\n",
            r#"data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        let f = FinalInfo {
            output_tokens: Some(2),
            prompt_tokens: Some(5),
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiCompletions, true, body);
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
    }

    #[test]
    fn openai_completions_stream() {
        let body = concat!(
            r#"data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null}]}"#,
            "\n\n",
            r#"data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":null}]}"#,
            "\n\n",
            r#"data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":".","logprobs":null,"finish_reason":"stop"}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        let f = FinalInfo {
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiCompletions, true, body);
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
    }

    #[test]
    fn openai_reasoning_counts_as_content_and_other_finish_reason() {
        let body = concat!(
            r#"data: {"choices":[{"delta":{"reasoning_content":"think"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"reasoning":"more"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"ok"},"finish_reason":"tool_calls"}]}"#,
            "\n\n",
        );
        let f = FinalInfo {
            done_reason: Some(DoneReason::Other),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(got, (with_final(contents(3), f), StreamEnd::Complete));
    }

    #[test]
    fn openai_several_events_in_one_piece_and_only_first_choice() {
        let body = concat!(
            r#"data: {"choices":[{"index":0,"delta":{"content":""}},{"index":1,"delta":{"content":"other"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(
            check(Api::OpenaiChat, true, body),
            (contents(1), StreamEnd::Complete)
        );
    }

    #[test]
    fn openai_truncated() {
        let before_finish = OPENAI_CHAT.find(r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"#).unwrap();
        let mut dec = StreamDecoder::new(Api::OpenaiChat, true);
        for cut in 0..before_finish + 30 {
            let (evs, end) = run(&mut dec, &[&OPENAI_CHAT.as_bytes()[..cut]]);
            assert_eq!(end, StreamEnd::Truncated, "cut at {cut}");
            assert!(evs.iter().all(|e| *e == Content));
        }
        let got = check(Api::OpenaiChat, true, &OPENAI_CHAT[..before_finish]);
        assert_eq!(got, (contents(2), StreamEnd::Truncated));
        // Cut inside `data: [DONE]` after the finish_reason: still complete.
        let done_at = OPENAI_CHAT.find("data: [DONE]").unwrap();
        for cut in done_at..OPENAI_CHAT.len() {
            let (_, end) = run(&mut dec, &[&OPENAI_CHAT.as_bytes()[..cut]]);
            assert_eq!(end, StreamEnd::Complete, "cut at {cut}");
        }
        // Usage seen but no finish_reason and no [DONE]: truncated, figures still reported.
        let body = concat!(
            r#"data: {"choices":[{"delta":{"content":"a"},"finish_reason":null}],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            "\n\n",
        );
        let f = FinalInfo {
            output_tokens: Some(1),
            prompt_tokens: Some(4),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(got, (with_final(contents(1), f), StreamEnd::Truncated));
    }

    #[test]
    fn openai_in_stream_error() {
        let body = concat!(
            r#"data: {"choices":[{"delta":{"content":"a"}}]}"#,
            "\n\n",
            "event: error\n",
            r#"data: {"error":{"object":"error","message":"boom","type":"InternalServerError","code":500}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(
            got,
            (contents(1), StreamEnd::Error(StreamError::InStreamError))
        );
        let body = "data: {\"error\":\"overloaded\"}\n\n";
        let got = check(Api::OpenaiCompletions, true, body);
        assert_eq!(got, (vec![], StreamEnd::Error(StreamError::InStreamError)));
        // `"error":null` is not an error.
        let body =
            "data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":\"stop\"}],\"error\":null}\n\n";
        let got = check(Api::OpenaiCompletions, true, body);
        let f = FinalInfo {
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        assert_eq!(got, (with_final(contents(1), f), StreamEnd::Complete));
    }

    #[test]
    fn openai_bad_json() {
        let body = concat!(
            r#"data: {"choices":[{"delta":{"content":"a"}}]}"#,
            "\n\n",
            r#"data: {"choices":[}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"b"}}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(got, (contents(2), StreamEnd::Error(StreamError::BadJson)));
        for bad in [
            "data: [DONE!]\n\n",
            "data: {\"choices\":{}}\n\n",
            "data: hello\n\n",
        ] {
            let got = check(Api::OpenaiChat, true, bad);
            assert_eq!(
                got,
                (vec![], StreamEnd::Error(StreamError::BadJson)),
                "{bad:?}"
            );
        }
    }

    // ---------------- non-streaming ----------------

    #[test]
    fn non_streaming_ollama() {
        let body = r#"{"model":"llama3.2","created_at":"t","response":"The sky is blue\u0021\n","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}"#;
        let got = check(Api::OllamaGenerate, false, body);
        assert_eq!(
            got,
            (with_final(contents(1), OLLAMA_FINAL), StreamEnd::Complete)
        );

        let body = "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi!\"},\"done_reason\":\"length\",\"done\":true,\"eval_count\":2,\"prompt_eval_count\":8}\n";
        let f = FinalInfo {
            output_tokens: Some(2),
            prompt_tokens: Some(8),
            done_reason: Some(DoneReason::Length),
            ..FinalInfo::default()
        };
        let got = check(Api::OllamaChat, false, body);
        assert_eq!(got, (with_final(contents(1), f), StreamEnd::Complete));

        // Empty output: complete, but no content event.
        let body = r#"{"message":{"role":"assistant","content":""},"done":true,"eval_count":0}"#;
        let f = FinalInfo {
            output_tokens: Some(0),
            ..FinalInfo::default()
        };
        let got = check(Api::OllamaChat, false, body);
        assert_eq!(got, (vec![Ev::Final(f)], StreamEnd::Complete));
    }

    #[test]
    fn non_streaming_openai() {
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"there\""},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#;
        let f = FinalInfo {
            output_tokens: Some(12),
            prompt_tokens: Some(9),
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiChat, false, body);
        assert_eq!(got, (with_final(contents(1), f), StreamEnd::Complete));

        let body = "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"\\u00e9t\\u00e9\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":16}}\r\n";
        let f = FinalInfo {
            output_tokens: Some(16),
            prompt_tokens: Some(3),
            done_reason: Some(DoneReason::Length),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiCompletions, false, body);
        assert_eq!(got, (with_final(contents(1), f), StreamEnd::Complete));
    }

    #[test]
    fn non_streaming_failures() {
        let full = r#"{"choices":[{"message":{"content":"Hello"},"finish_reason":"stop"}]}"#;
        let mut dec = StreamDecoder::new(Api::OpenaiChat, false);
        for cut in 0..full.len() {
            let got = run(&mut dec, &[&full.as_bytes()[..cut]]);
            assert_eq!(got, (vec![], StreamEnd::Truncated), "cut at {cut}");
        }
        for api in Api::ALL {
            assert_eq!(check(api, false, ""), (vec![], StreamEnd::Truncated));
            assert_eq!(check(api, false, " \n"), (vec![], StreamEnd::Truncated));
            assert_eq!(
                check(api, false, "{\"a\":1,}"),
                (vec![], StreamEnd::Error(StreamError::BadJson))
            );
            assert_eq!(
                check(api, false, "{\"a\":1} trailing"),
                (vec![], StreamEnd::Error(StreamError::BadJson))
            );
        }
        let got = check(
            Api::OllamaChat,
            false,
            r#"{"error":"model \"x\" not found, try pulling it first"}"#,
        );
        assert_eq!(got, (vec![], StreamEnd::Error(StreamError::InStreamError)));
        let got = check(
            Api::OpenaiCompletions,
            false,
            r#"{"object":"error","error":{"message":"bad request","code":400}}"#,
        );
        assert_eq!(got, (vec![], StreamEnd::Error(StreamError::InStreamError)));
    }

    // ---------------- limits and buffer handling ----------------

    #[test]
    fn event_too_large_small_limit() {
        let big = format!("{{\"response\":\"{}\",\"done\":false}}", "x".repeat(100));
        let body = format!(
            "{{\"response\":\"a\",\"done\":false}}\n{big}\n{{\"response\":\"b\",\"done\":true,\"eval_count\":2}}\n"
        );
        let mut dec = StreamDecoder::new(Api::OllamaGenerate, true).with_max_event_len(64);
        let got = check_with(&mut dec, body.as_bytes());
        let f = FinalInfo {
            output_tokens: Some(2),
            ..FinalInfo::default()
        };
        assert_eq!(
            got,
            (
                with_final(contents(2), f),
                StreamEnd::Error(StreamError::EventTooLarge)
            )
        );
        assert!(dec.buf.capacity() <= 128, "buffered past the limit");

        let mut dec = StreamDecoder::new(Api::OpenaiChat, false).with_max_event_len(64);
        let body = format!(
            "{{\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}",
            "y".repeat(100)
        );
        let got = check_with(&mut dec, body.as_bytes());
        assert_eq!(got, (vec![], StreamEnd::Error(StreamError::EventTooLarge)));
        assert!(dec.buf.capacity() <= 128, "buffered past the limit");

        // An event of exactly the limit is fine.
        let line = r#"{"response":"abc","done":true}"#;
        let mut dec = StreamDecoder::new(Api::OllamaGenerate, true).with_max_event_len(line.len());
        let got = check_with(&mut dec, format!("{line}\n").as_bytes());
        assert_eq!(got, (contents(1), StreamEnd::Complete));
    }

    #[test]
    fn event_too_large_default_limit() {
        let mut rec = Rec::default();
        let mut dec = StreamDecoder::new(Api::OpenaiChat, true);
        let head = b"data: {\"choices\":[{\"delta\":{\"content\":\"";
        dec.feed(head, &mut rec);
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..40 {
            dec.feed(&chunk, &mut rec);
        }
        assert!(dec.buf.is_empty() && dec.skipping);
        assert!(dec.buf.capacity() <= 2 * MAX_EVENT_LEN);
        dec.feed(
            b"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n",
            &mut rec,
        );
        let end = dec.finish(&mut rec);
        assert_eq!(rec.0, contents(1));
        assert_eq!(end, StreamEnd::Error(StreamError::EventTooLarge));

        // The same line whole, in one piece.
        let mut line = head.to_vec();
        line.extend(std::iter::repeat_n(b'z', MAX_EVENT_LEN));
        line.extend_from_slice(b"\"}}]}\n\n");
        let got = run(&mut dec, &[&line]);
        assert_eq!(got, (vec![], StreamEnd::Error(StreamError::EventTooLarge)));
    }

    #[test]
    fn reset_keeps_capacity_and_state_is_cleared() {
        let mut dec = StreamDecoder::new(Api::OllamaGenerate, true);
        let bytes: Vec<&[u8]> = OLLAMA_GENERATE.as_bytes().chunks(10).collect();
        let first = run(&mut dec, &bytes);
        let cap = dec.buf.capacity();
        assert!(cap > 0);
        // Leave a partial line and an error behind, then reset.
        let mut rec = Rec::default();
        dec.feed(b"{\"error\":\"x\"}\n{\"respo", &mut rec);
        dec.reset();
        assert_eq!(dec.buf.capacity(), cap);
        assert_eq!(run(&mut dec, &bytes), first);
        // Feeding after finish without reset is ignored.
        let mut rec = Rec::default();
        dec.feed(b"{\"response\":\"x\"}\n", &mut rec);
        assert!(rec.0.is_empty());
    }

    #[test]
    fn final_is_reported_once() {
        // vLLM continuous usage stats: usage on every chunk; the last wins.
        let body = concat!(
            r#"data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        );
        let f = FinalInfo {
            output_tokens: Some(2),
            prompt_tokens: Some(4),
            done_reason: Some(DoneReason::Stop),
            ..FinalInfo::default()
        };
        let got = check(Api::OpenaiChat, true, body);
        assert_eq!(got, (with_final(contents(2), f), StreamEnd::Complete));
    }

    #[test]
    fn finish_twice_is_stable() {
        let mut dec = StreamDecoder::new(Api::OpenaiChat, true);
        let mut rec = Rec::default();
        dec.feed(OPENAI_CHAT.as_bytes(), &mut rec);
        assert_eq!(dec.finish(&mut rec), StreamEnd::Complete);
        assert_eq!(dec.finish(&mut rec), StreamEnd::Complete);
        assert_eq!(rec.0, with_final(contents(2), OPENAI_FINAL));
    }
}

//! LLM responses on the hot path: the decoded body goes through the API's stream decoder,
//! and each response yields TTFB, TTFT, inter-token gaps, TPOT, token counts, Ollama's own
//! timings and a verdict (a 200 whose stream failed is a failed request).

use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use flate2::write::{GzDecoder, ZlibDecoder};

use crate::http::response::{BodySink, CodingName, ContentEncoding, ResponseHead};
use crate::llm::slo::Measured;
use crate::llm::{DoneReason, FinalInfo, StreamDecoder, StreamEnd, StreamObserver};
use crate::plan::LlmPlan;
use crate::stats::{Counters, ErrorKind, Hists, Metric};

/// One connection's LLM state, reused from response to response.
pub(crate) struct LlmTracker {
    plan: LlmPlan,
    decoder: StreamDecoder,
    /// A compressed body's decompressor (gzip, deflate), between the framing and `decoder`.
    inflate: Option<Inflate>,
    r: Response,
}

/// Decompresses a body as it arrives: what it writes collects in its `Vec`, which is fed to
/// the stream decoder and cleared after each piece. One is made per compressed response
/// (`write::GzDecoder` cannot be reset); uncompressed responses have none.
enum Inflate {
    Gzip(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
}

impl Inflate {
    fn new(encoding: ContentEncoding) -> Option<Inflate> {
        match encoding {
            ContentEncoding::Gzip => Some(Inflate::Gzip(GzDecoder::new(Vec::new()))),
            ContentEncoding::Deflate => Some(Inflate::Zlib(ZlibDecoder::new(Vec::new()))),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Inflate::Gzip(_) => "gzip",
            Inflate::Zlib(_) => "deflate",
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Inflate::Gzip(d) => d.write_all(data),
            Inflate::Zlib(d) => d.write_all(data),
        }
    }

    /// The body has ended: check that the compressed stream did too.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Inflate::Gzip(d) => d.try_finish(),
            Inflate::Zlib(d) => d.try_finish(),
        }
    }

    fn out(&mut self) -> &mut Vec<u8> {
        match self {
            Inflate::Gzip(d) => d.get_mut(),
            Inflate::Zlib(d) => d.get_mut(),
        }
    }
}

/// Token events needed to tell whether a stream arrived in one piece.
const MIN_EVENTS_TO_TIME: u64 = 3;
/// Token events arriving closer together than this on average were not streamed: no model
/// generates that fast, a buffering proxy releasing a whole answer does.
const BUFFERED_GAP: Duration = Duration::from_micros(100);

/// What one response has shown so far.
#[derive(Default)]
struct Response {
    /// A 2xx: its body is a stream to decode (other statuses carry an error document).
    decoding: bool,
    /// Latency counts from here: the intended send time in an open loop, else the write.
    base: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    events: u64,
    fin: Option<FinalInfo>,
    /// A 2xx in a Content-Encoding blast cannot decode: not decoded, failed at the end.
    undecodable: Option<CodingName>,
    /// The compressed body did not decompress: decoding stopped, failed at the end.
    inflate_error: Option<io::Error>,
}

/// Sees the decoder's events at the time of the read that delivered them.
struct Observer<'a> {
    r: &'a mut Response,
    hists: &'a mut Hists,
    now: Instant,
}

impl StreamObserver for Observer<'_> {
    fn on_content(&mut self) {
        match self.r.last {
            Some(last) => self.hists.record(Metric::Itl, self.now - last),
            None => self.r.first = Some(self.now),
        }
        self.r.last = Some(self.now);
        self.r.events += 1;
    }

    fn on_final(&mut self, f: &FinalInfo) {
        self.r.fin = Some(*f);
    }
}

impl LlmTracker {
    pub fn new(plan: LlmPlan) -> LlmTracker {
        LlmTracker {
            plan,
            decoder: StreamDecoder::new(plan.api, plan.stream),
            inflate: None,
            r: Response::default(),
        }
    }

    fn head(&mut self, head: &ResponseHead, base: Instant, now: Instant, hists: &mut Hists) {
        self.decoder.reset();
        let decoding = (200..300).contains(&head.status);
        self.inflate = None;
        let mut undecodable = None;
        if decoding {
            match head.content_encoding {
                ContentEncoding::Identity => {}
                ContentEncoding::Other(name) => undecodable = Some(name),
                e => self.inflate = Inflate::new(e),
            }
        }
        self.r = Response {
            decoding,
            base: Some(base),
            undecodable,
            ..Response::default()
        };
        hists.record(Metric::Ttfb, now - base);
    }

    fn body(&mut self, data: &[u8], now: Instant, hists: &mut Hists) {
        if !self.r.decoding || self.r.undecodable.is_some() || self.r.inflate_error.is_some() {
            return;
        }
        let data = match &mut self.inflate {
            None => data,
            Some(inflate) => {
                inflate.out().clear();
                if let Err(e) = inflate.write(data) {
                    self.r.inflate_error = Some(e);
                }
                inflate.out().as_slice()
            }
        };
        self.decoder.feed(
            data,
            &mut Observer {
                r: &mut self.r,
                hists,
                now,
            },
        );
    }

    /// The body has ended: a compressed one must have ended as a whole compressed stream,
    /// and what its decompressor still held goes to the stream decoder.
    fn finish_inflate(&mut self, now: Instant, hists: &mut Hists) {
        let Some(inflate) = &mut self.inflate else {
            return;
        };
        if self.r.inflate_error.is_some() {
            return;
        }
        inflate.out().clear();
        if let Err(e) = inflate.finish() {
            self.r.inflate_error = Some(e);
        }
        self.decoder.feed(
            inflate.out(),
            &mut Observer {
                r: &mut self.r,
                hists,
                now,
            },
        );
    }

    /// The response failed after its head (a timeout, a close, a broken body): keep the
    /// tokens that did arrive, counted by their events.
    pub fn abandon(&mut self, counters: &mut Counters) {
        if !self.r.decoding {
            return;
        }
        self.r.decoding = false;
        counters.tokens += self.r.events;
        counters.tokens_by_events += 1;
    }

    /// The HTTP response is complete: decide whether the stream was, and record its figures.
    pub fn finish(
        &mut self,
        now: Instant,
        counters: &mut Counters,
        hists: &mut Hists,
    ) -> Result<(), ErrorKind> {
        if !self.r.decoding {
            return Ok(());
        }
        self.r.decoding = false;
        if let Some(name) = self.r.undecodable {
            counters.undecodable += 1;
            counters.record_error_message(
                ErrorKind::Stream,
                &format_args!(
                    "Content-Encoding {} is not decoded by blast (only gzip and deflate are)",
                    name.as_str()
                ),
            );
            return Err(ErrorKind::Stream);
        }
        self.finish_inflate(now, hists);
        if let Some(e) = self.r.inflate_error.take() {
            let coding = self.inflate.as_ref().map_or("", Inflate::name);
            counters.record_error_message(
                ErrorKind::Stream,
                &format_args!("the {coding} body did not decompress: {e}"),
            );
            return Err(ErrorKind::Stream);
        }
        match self.decoder.finish(&mut Observer {
            r: &mut self.r,
            hists,
            now,
        }) {
            StreamEnd::Complete => {}
            StreamEnd::Truncated => {
                counters.record_error_message(
                    ErrorKind::Truncated,
                    &"the body ended before the stream said it was done",
                );
                return Err(ErrorKind::Truncated);
            }
            StreamEnd::Error(e) => {
                counters.record_error_message(ErrorKind::Stream, &e);
                return Err(ErrorKind::Stream);
            }
        }
        let r = &self.r;
        let base = r.base.unwrap_or(now);
        let e2e = now - base;
        let ttft = r.first.map(|f| f - base);
        let fin = r.fin.unwrap_or_default();
        let tokens = match fin.output_tokens {
            Some(n) => {
                counters.tokens_by_server += 1;
                n
            }
            None => {
                counters.tokens_by_events += 1;
                r.events
            }
        };
        counters.tokens += tokens;
        counters.prompt_tokens += fin.prompt_tokens.unwrap_or(0);
        if let Some(t) = ttft {
            hists.record(Metric::Ttft, t);
        }
        // A stream whose token events all came at once (a buffering proxy) has an ITL and
        // a TPOT that say nothing: count it, so that the report can say so.
        if let (true, Some(first), Some(last)) = (self.plan.stream, r.first, r.last) {
            if r.events >= MIN_EVENTS_TO_TIME {
                counters.timed_streams += 1;
                let gaps = (r.events - 1).min(u32::MAX as u64) as u32;
                if last - first < BUFFERED_GAP * gaps {
                    counters.buffered_streams += 1;
                }
            }
        }
        let tpot = tpot(e2e, ttft, tokens);
        if let Some(t) = tpot {
            hists.record(Metric::Tpot, t);
        }
        record_server_timings(&fin, counters, hists);
        if let Some(reason) = fin.done_reason {
            let i = match reason {
                DoneReason::Stop => 0,
                DoneReason::Length => 1,
                DoneReason::Other => 2,
            };
            counters.done_reasons[i] += 1;
        }
        if self.plan.slo.is_set() && self.plan.slo.met(&Measured { ttft, tpot, e2e }) {
            counters.good += 1;
        }
        Ok(())
    }
}

/// Time per output token after the first: (E2E - TTFT) / (tokens - 1), as vLLM defines it.
fn tpot(e2e: Duration, ttft: Option<Duration>, tokens: u64) -> Option<Duration> {
    let ttft = ttft?;
    if tokens < 2 {
        return None;
    }
    Some(e2e.saturating_sub(ttft) / (tokens - 1).min(u32::MAX as u64) as u32)
}

/// Ollama's final object says where its time went; what is left of the total is queueing.
fn record_server_timings(fin: &FinalInfo, counters: &mut Counters, hists: &mut Hists) {
    let ns = Duration::from_nanos;
    if let Some(v) = fin.load_ns {
        hists.record(Metric::ServerLoad, ns(v));
    }
    if let Some(v) = fin.prompt_eval_ns {
        hists.record(Metric::ServerPromptEval, ns(v));
    }
    if let Some(v) = fin.eval_ns {
        hists.record(Metric::ServerEval, ns(v));
        if let Some(n) = fin.output_tokens {
            counters.server_eval_tokens += n;
            counters.server_eval_ns += v;
        }
    }
    if let (Some(total), Some(load), Some(pe), Some(eval)) =
        (fin.total_ns, fin.load_ns, fin.prompt_eval_ns, fin.eval_ns)
    {
        hists.record(
            Metric::ServerQueue,
            ns(total.saturating_sub(load + pe + eval)),
        );
    }
}

/// What the response parser hands decoded body bytes to: the tracker when there is one.
pub(crate) struct BodyTap<'a> {
    pub llm: Option<&'a mut LlmTracker>,
    pub hists: &'a std::cell::RefCell<Hists>,
    pub base: Instant,
    pub now: Instant,
}

impl BodySink for BodyTap<'_> {
    fn on_head(&mut self, head: &ResponseHead) {
        if let Some(llm) = self.llm.as_deref_mut() {
            llm.head(head, self.base, self.now, &mut self.hists.borrow_mut());
        }
    }

    fn on_body(&mut self, data: &[u8]) {
        if let Some(llm) = self.llm.as_deref_mut() {
            llm.body(data, self.now, &mut self.hists.borrow_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::slo::Slo;
    use crate::llm::Api;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn tpot_follows_vllm() {
        assert_eq!(tpot(MS(1000), Some(MS(100)), 10), Some(MS(100)));
        assert_eq!(tpot(MS(1000), Some(MS(100)), 1), None);
        assert_eq!(tpot(MS(1000), None, 10), None);
    }

    fn tracker() -> LlmTracker {
        let slo = Slo::parse("ttft=50ms").unwrap();
        LlmTracker::new(LlmPlan {
            api: Api::OllamaGenerate,
            stream: true,
            slo,
        })
    }

    /// One response through the tracker: its head at `head_ms`, then each body piece at its
    /// time (ms after the request's base), completed at the last piece's time.
    fn respond(
        t: &mut LlmTracker,
        (c, h): (&mut Counters, &mut Hists),
        status: u16,
        head_ms: u64,
        pieces: &[(u64, &[u8])],
    ) -> Result<(), ErrorKind> {
        let base = Instant::now();
        let head = ResponseHead {
            status,
            keep_alive: true,
            content_encoding: ContentEncoding::Identity,
        };
        t.head(&head, base, base + MS(head_ms), h);
        for (ms, data) in pieces {
            t.body(data, base + MS(*ms), h);
        }
        let end = pieces.last().map_or(head_ms, |(ms, _)| *ms);
        t.finish(base + MS(end), c, h)
    }

    #[test]
    fn ollama_stream_yields_timings_tokens_and_goodput() {
        let mut t = tracker();
        let (mut c, mut h) = (Counters::default(), Hists::new(&Metric::ALL));
        let fin = b"{\"response\":\"\",\"done\":true,\"done_reason\":\"length\",\"eval_count\":3,\
            \"total_duration\":100000000,\"load_duration\":10000000,\"prompt_eval_duration\":20000000,\
            \"eval_duration\":30000000}\n";
        let pieces: &[(u64, &[u8])] = &[
            (20, b"{\"response\":\"a\",\"done\":false}\n"),
            (
                30,
                b"{\"response\":\"b\",\"done\":false}\n{\"response\":\"c\",\"done\":false}\n",
            ),
            (40, fin),
        ];
        assert_eq!(respond(&mut t, (&mut c, &mut h), 200, 5, pieces), Ok(()));
        assert_eq!(
            (c.tokens, c.tokens_by_server, c.done_reasons[1], c.good),
            (3, 1, 1, 1)
        );
        assert_eq!((c.server_eval_tokens, c.server_eval_ns), (3, 30_000_000));
        // Histograms keep 3 significant digits: compare with their own notion of equality.
        let p50_is = |m: Metric, us: u64| {
            let h = h.get(m).unwrap();
            assert!(
                h.equivalent(h.value_at_quantile(0.5), us),
                "{m:?}: {}",
                h.value_at_quantile(0.5)
            );
        };
        p50_is(Metric::Ttft, 20_000);
        p50_is(Metric::Tpot, 10_000);
        p50_is(Metric::ServerQueue, 40_000);
        assert_eq!(h.get(Metric::Itl).unwrap().len(), 2);
    }

    /// One streamed Ollama response of `n` tokens, with its final object.
    fn ollama_body(n: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..n {
            body.extend_from_slice(
                format!("{{\"response\":\"t{i}\",\"done\":false}}\n").as_bytes(),
            );
        }
        body.extend_from_slice(b"{\"response\":\"\",\"done\":true,\"eval_count\":3}\n");
        body
    }

    /// A response in `encoding`, its pieces at the given ms after the base, like `respond`.
    fn respond_encoded(
        t: &mut LlmTracker,
        (c, h): (&mut Counters, &mut Hists),
        content_encoding: ContentEncoding,
        pieces: &[(u64, &[u8])],
    ) -> Result<(), ErrorKind> {
        let base = Instant::now();
        let head = ResponseHead {
            status: 200,
            keep_alive: true,
            content_encoding,
        };
        t.head(&head, base, base, h);
        for (ms, data) in pieces {
            t.body(data, base + MS(*ms), h);
        }
        let end = pieces.last().map_or(0, |(ms, _)| *ms);
        t.finish(base + MS(end), c, h)
    }

    /// Issue 12: a stream whose tokens all arrive at once (a buffering proxy) is counted as
    /// buffered; one paced by the server is not.
    #[test]
    fn streams_that_arrive_in_one_piece_are_counted_as_buffered() {
        let (mut c, mut h) = (Counters::default(), Hists::new(&Metric::ALL));
        let mut t = tracker();
        let body = ollama_body(3);
        let at_once: &[(u64, &[u8])] = &[(200, &body)];
        assert_eq!(respond(&mut t, (&mut c, &mut h), 200, 0, at_once), Ok(()));
        assert_eq!((c.timed_streams, c.buffered_streams), (1, 1));
        let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
        let paced: Vec<(u64, &[u8])> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (20 + 10 * i as u64, *l))
            .collect();
        assert_eq!(respond(&mut t, (&mut c, &mut h), 200, 0, &paced), Ok(()));
        assert_eq!((c.timed_streams, c.buffered_streams), (2, 1));
    }

    /// Issue 12: gzip and deflate bodies are decompressed for the stream decoder, piece by
    /// piece as they arrive; a coding blast cannot decode, or a corrupt body, fails the
    /// request with a message that names it.
    #[test]
    fn compressed_streams_are_decoded_and_others_named() {
        use flate2::write::{GzEncoder, ZlibEncoder};
        use flate2::Compression;
        use std::io::Write;
        let (mut c, mut h) = (Counters::default(), Hists::new(&Metric::ALL));
        let mut t = tracker();
        let body = ollama_body(3);
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&body).unwrap();
        let zlib = zlib.finish().unwrap();
        for (encoding, bytes) in [
            (ContentEncoding::Gzip, &gz),
            (ContentEncoding::Deflate, &zlib),
        ] {
            // Cut inside the gzip header and the compressed data.
            let pieces: Vec<(u64, &[u8])> = bytes.chunks(5).map(|p| (10, p)).collect();
            let before = c.tokens;
            assert_eq!(
                respond_encoded(&mut t, (&mut c, &mut h), encoding, &pieces),
                Ok(())
            );
            assert_eq!(c.tokens - before, 3, "{encoding:?}");
        }
        assert_eq!(c.failed, 0);

        let corrupt: &[(u64, &[u8])] = &[(10, &gz[..gz.len() - 12])];
        assert_eq!(
            respond_encoded(&mut t, (&mut c, &mut h), ContentEncoding::Gzip, corrupt),
            Err(ErrorKind::Stream)
        );
        let resp = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n";
        let mut p = crate::http::response::ResponseParser::new();
        let br = match p.feed(resp, &mut ()) {
            Ok(crate::http::response::Progress::Complete { head, .. }) => head.content_encoding,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            respond_encoded(&mut t, (&mut c, &mut h), br, &[(10, b"\x1b\x00")]),
            Err(ErrorKind::Stream)
        );
        assert_eq!(c.undecodable, 1);
        let messages = c.messages.of(ErrorKind::Stream);
        assert!(messages[0].contains("gzip"), "{messages:?}");
        assert!(messages[1].contains("Content-Encoding br"), "{messages:?}");
    }

    #[test]
    fn truncated_and_error_streams_fail_and_non_2xx_is_not_decoded() {
        let (mut c, mut h) = (Counters::default(), Hists::new(&Metric::ALL));
        let mut t = tracker();
        let truncated: &[(u64, &[u8])] = &[(0, b"{\"response\":\"a\",\"done\":false}\n")];
        let in_stream_error: &[(u64, &[u8])] = &[(0, b"{\"error\":\"boom\"}\n")];
        let busy: &[(u64, &[u8])] = &[(0, b"{\"error\":\"server busy\"}")];
        let mut run = |status, pieces| respond(&mut t, (&mut c, &mut h), status, 0, pieces);
        assert_eq!(run(200, truncated), Err(ErrorKind::Truncated));
        assert_eq!(run(200, in_stream_error), Err(ErrorKind::Stream));
        assert_eq!(run(503, busy), Ok(()));
        assert_eq!(c.tokens, 0);
    }
}

//! A generation response: admission (`--parallel`), pacing (`--ttft`, `--token-delay`),
//! and the stream or whole body, with Ollama's timings measured as it goes.

use std::io;
use std::time::{Duration, Instant};

use futures_lite::future::or;

use super::{count, peer_gone, Conn, FLUSH_AT, SLICE};
use crate::mock::api::GenSpec;
use crate::mock::render::{
    created_at, push_head, push_response, push_stream_end, render_full, render_tokens, BodyLen,
    ConnMode, Timings, JSON, NDJSON, SSE, WORDS,
};
use crate::mock::server::Core;
use crate::mock::stats::{CoreStats, Route, Ticket};
use crate::rt;

/// Length of Ollama's `created_at` (RFC 3339 with nanoseconds has a fixed width), so a
/// pre-rendered chunk can be re-stamped in place.
const STAMP_LEN: usize = "2024-01-01T00:00:00.000000000Z".len();

/// `base + offset + step * n`, saturating at a year away (absurd delays must not panic).
fn deadline(base: Instant, offset: Duration, step: Duration, n: u32) -> Instant {
    step.checked_mul(n)
        .and_then(|d| d.checked_add(offset))
        .and_then(|d| base.checked_add(d))
        .unwrap_or_else(|| base + Duration::from_secs(365 * 86400))
}

fn nanos(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos() as u64
}

struct InFlight<'a>(&'a CoreStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.gauge_in_flight(false);
    }
}

impl Conn {
    /// Produces a generation response; true when the connection must close after it.
    pub(super) async fn generate(
        &mut self,
        core: &Core,
        spec: GenSpec,
        mode: ConnMode,
        http10: bool,
    ) -> io::Result<bool> {
        let t_arrive = Instant::now();
        let route = Route::Gen(spec.api);
        let oa = !spec.api.is_ollama();
        let stats = core.stats();
        if core.inject_error() {
            core.canned
                .injected
                .get(oa)
                .push(&mut self.out, mode, false);
            count(core, route, 500);
            return Ok(mode.closes());
        }
        let _slot = match &core.shared.admission {
            None => None,
            Some(adm) => {
                let Some(mut ticket) = Ticket::take(&core.shared, adm, &core.waiters) else {
                    core.canned.busy.get(oa).push(&mut self.out, mode, false);
                    count(core, route, 503);
                    return Ok(mode.closes());
                };
                if !ticket.admit_now() {
                    // Earlier pipelined answers should not wait behind the queue.
                    self.flush().await?;
                    stats.gauge_waiting(true);
                    let r = or(&mut ticket, peer_gone(&self.stream)).await;
                    stats.gauge_waiting(false);
                    r?;
                }
                Some(ticket)
            }
        };
        stats.gauge_in_flight(true);
        let _in_flight = InFlight(stats);

        let t_slot = Instant::now();
        let stamp = core.stamp(spec.api, &spec.model);
        // HTTP/1.0 has no chunked encoding: stream until close instead.
        let chunked = !http10;
        let close = mode.closes() || (spec.stream && http10);
        let mode = if close { ConnMode::Close } else { mode };
        if spec.stream {
            render_tokens(
                &mut self.tok,
                &mut self.offs,
                &mut self.ts,
                &mut self.scratch,
                &spec,
                &stamp,
                chunked,
            );
        }
        let t_gen = Instant::now();
        let (ttft, step) = (core.cfg.ttft, core.cfg.token_delay);
        if spec.stream {
            let ctype = if spec.api.is_ollama() { NDJSON } else { SSE };
            let len = if chunked {
                BodyLen::Chunked
            } else {
                BodyLen::UntilClose
            };
            push_head(&mut self.out, 200, ctype, len, mode, "");
            count(core, route, 200);
            let mut first_at = None;
            let w = WORDS.len();
            // Ollama stamps every chunk. With a token delay each token reads the clock
            // (late ones too, which a sleep would not tell); a zero-delay stream only
            // after a wait or a flush, so it costs no clock read per token.
            let paced = !step.is_zero();
            let mut now_at = [0u8; STAMP_LEN];
            let stamped = !self.ts.is_empty() && stamp.created_at.len() == STAMP_LEN;
            if stamped {
                now_at.copy_from_slice(stamp.created_at.as_bytes());
            }
            let mut waited = false;
            for i in 0..spec.tokens {
                waited |= self.pace(deadline(t_gen, ttft, step, i)).await? || paced;
                if i == 0 {
                    first_at = Some(Instant::now());
                    // OpenAI chat's role-only chunk, empty for the other APIs.
                    self.out.extend_from_slice(&self.tok[..self.offs[0]]);
                }
                let k = i as usize % w;
                let (a, b) = (self.offs[k], self.offs[k + 1]);
                let base = self.out.len();
                self.out.extend_from_slice(&self.tok[a..b]);
                if stamped {
                    if waited {
                        let t = created_at(spec.api);
                        if t.len() == STAMP_LEN {
                            now_at.copy_from_slice(t.as_bytes());
                        }
                        waited = false;
                    }
                    let p = base + self.ts[k] - a;
                    self.out[p..p + STAMP_LEN].copy_from_slice(&now_at);
                }
                stats.add_tokens(1);
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                    rt::yield_if_needed(SLICE).await;
                    waited = true;
                }
            }
            // The final object follows the last token at once (with no tokens, after the
            // time to first token).
            if spec.tokens == 0 {
                self.pace(deadline(t_gen, ttft, step, 0)).await?;
            }
            let t_end = Instant::now();
            let t_first = first_at.unwrap_or(t_end);
            let timings = timings(t_arrive, t_slot, t_gen, t_first, t_end);
            let end_at = created_at(spec.api);
            push_stream_end(
                &mut self.out,
                &mut self.scratch,
                &spec,
                &stamp,
                &end_at,
                &timings,
                chunked,
                core.cfg.no_done,
            );
        } else {
            // Done when the last token would have been.
            let last = spec.tokens.saturating_sub(1);
            self.pace(deadline(t_gen, ttft, step, last)).await?;
            let t_end = Instant::now();
            let t_first = deadline(t_gen, ttft, step, 0).min(t_end);
            let timings = timings(t_arrive, t_slot, t_gen, t_first, t_end);
            let end_at = created_at(spec.api);
            render_full(&mut self.scratch, &spec, &stamp, &end_at, &timings);
            push_response(&mut self.out, 200, JSON, &self.scratch, mode, "", false);
            count(core, route, 200);
            stats.add_tokens(spec.tokens as u64);
        }
        Ok(close)
    }
}

/// Queue wait is `t_slot - t_arrive`; it is in `total` but none of the phases.
fn timings(
    t_arrive: Instant,
    t_slot: Instant,
    t_gen: Instant,
    t_first: Instant,
    t_end: Instant,
) -> Timings {
    Timings {
        total: nanos(t_arrive, t_end),
        load: nanos(t_slot, t_gen),
        prompt_eval: nanos(t_gen, t_first),
        eval: nanos(t_first, t_end),
    }
}

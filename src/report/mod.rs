//! The result of a run as plain data (`Report`), and its printers. Printers take any
//! `Write`; none of them touches a socket.

pub mod csv;
pub mod json;
pub mod sweep;
pub mod text;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use std::time::Duration;

use crate::aggregate::{Aggregator, TimelineRow};
use crate::plan::Plan;
use crate::schedule::RateSpec;
use crate::stats::{ErrorKind, Metric, Summary};

#[derive(Clone, Debug, Serialize)]
pub struct Requests {
    pub sent: u64,
    pub completed: u64,
    pub ok: u64,
    pub failed: u64,
    pub cut_off: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_bytes_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Connections {
    pub opened: u64,
    pub reconnects: u64,
    /// Closed because the server sent bytes while no request of ours was in flight.
    pub unsolicited: u64,
    /// `https://` only: TLS handshakes completed, and how many of them resumed a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_resumed: Option<u64>,
    /// `https://` only: handshakes by the cipher suite negotiated (IANA names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ciphers: Option<BTreeMap<String, u64>>,
}

/// Open loop: did blast send what it was asked to? If not, the latencies describe blast's
/// own shortfall as much as the server.
#[derive(Clone, Debug, Serialize)]
pub struct OpenLoop {
    /// Mean target rate over the sending window: the sends due in it over its length.
    pub target_rps: f64,
    /// Requests actually started per second over the same window.
    pub achieved_rps: f64,
    /// Due before the end but not sent by then (blast or its connections fell behind).
    pub missed: u64,
    pub send_lag_p99_us: u64,
    /// blast itself kept up: `limited_by` is `none` or `server`, so the figures describe the
    /// server (a server that falls behind is what a load test is there to find).
    pub kept_up: bool,
    /// What limited the run (see `Limit`).
    pub limited_by: Limit,
    /// Why, in a sentence (the summary's warning).
    #[serde(skip)]
    pub why: String,
}

/// What limited an open-loop run: nothing, blast itself, its connections (or
/// `--max-in-flight`), or the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    None,
    Client,
    Connections,
    Server,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::None => "none",
            Limit::Client => "client",
            Limit::Connections => "connections",
            Limit::Server => "server",
        }
    }
}

/// The figures an open-loop verdict is judged on, all plain numbers of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub missed: u64,
    pub sent: u64,
    pub failed: u64,
    /// blast's CPU time over elapsed x cores.
    pub cpu_utilization: f64,
    /// Sends after the first interval (start-up excluded), and those of them later than
    /// `--slack` + 1 ms.
    pub steady_sends: u64,
    pub late_sends: u64,
    /// Requests the connections may carry at once: conns x pipeline, or `--max-in-flight`
    /// when that is lower (`capped` then).
    pub capacity: u64,
    pub capped: bool,
    /// Most requests in flight at the end of any interval.
    pub peak_in_flight: u64,
    /// Requests in flight on average over the run (Little's law: completions per second x
    /// mean service time), which sees a pinned cap that interval ends may miss.
    pub mean_in_flight: f64,
    /// Second half of the sending window: sends, and answers (completed or failed).
    pub half_sent: u64,
    pub half_answered: u64,
    /// In flight at the start and at the end of that second half.
    pub in_flight_mid: u64,
    pub in_flight_end: u64,
}

/// A send later than `--slack` plus this is late beyond what was asked for.
const LAG_ALLOWANCE_US: u64 = 1_000;
/// The send lag is judged only on this many late sends at least (one late first send of a
/// short run makes the p99 of a small sample): and more than 1% of the steady sends.
const MIN_LATE_SENDS: u64 = 10;
/// The server's pace is judged only on this many sends in the second half of the window.
const MIN_HALF_SENDS: u64 = 20;
/// Average in-flight at this share of the capacity counts as all connections busy (the
/// average over the whole run includes its start and its drain, when fewer are busy).
const PINNED: f64 = 0.8;

/// Name what limited the run, and say why, from the most to the least direct evidence.
pub fn verdict(e: &Evidence) -> (Limit, String) {
    if e.cpu_utilization > SATURATED {
        return (
            Limit::Client,
            format!(
                "blast's cores were {:.0}% busy, so these figures describe blast as much as \
                 the server: add --cores",
                e.cpu_utilization * 100.0
            ),
        );
    }
    if e.failed > 0 && e.failed * 100 > e.sent {
        return (
            Limit::Server,
            format!(
                "the server: {} of {} requests failed (see Errors)",
                e.failed, e.sent
            ),
        );
    }
    let behind = e.achieved_rps < e.target_rps * (1.0 - RATE_TOLERANCE) || e.missed > 0;
    let pinned = e.peak_in_flight >= e.capacity || e.mean_in_flight >= e.capacity as f64 * PINNED;
    if behind && pinned && e.capacity > 0 {
        let raise = if e.capped {
            "raise --max-in-flight"
        } else {
            "raise --conns (or --pipeline)"
        };
        return (
            Limit::Connections,
            format!(
                "the connections: all {} requests they may carry were in flight, so blast \
                 sent {:.1} of the {:.1} req/s asked for: {raise}",
                e.capacity, e.achieved_rps, e.target_rps
            ),
        );
    }
    let grew = e.in_flight_end > e.in_flight_mid + e.in_flight_mid / 2 + 10;
    if e.half_sent >= MIN_HALF_SENDS && e.half_answered * 10 < e.half_sent * 9 && grew {
        return (
            Limit::Server,
            format!(
                "the server: it answered {} of the {} requests sent in the second half of \
                 the run, and requests in flight grew from {} to {}",
                e.half_answered, e.half_sent, e.in_flight_mid, e.in_flight_end
            ),
        );
    }
    if e.late_sends >= MIN_LATE_SENDS && e.late_sends * 100 > e.steady_sends {
        return (
            Limit::Client,
            format!(
                "blast: {} of {} sends after start-up were more than --slack + 1ms late: \
                 add --cores",
                e.late_sends, e.steady_sends
            ),
        );
    }
    if behind {
        return (
            Limit::Client,
            format!(
                "blast: it sent {:.1} of the {:.1} req/s asked for ({} missed): add --cores",
                e.achieved_rps, e.target_rps, e.missed
            ),
        );
    }
    (Limit::None, String::new())
}

/// Something the figures alone do not say, in the JSON's `warnings` and the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

/// LLM figures of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Tokens {
    /// Generated tokens over all successful responses.
    pub output: u64,
    /// Generated tokens per second of the run.
    pub per_s: f64,
    /// "server" when every response carried the server's count (Ollama eval_count, OpenAI
    /// usage.completion_tokens), "events" when none did (token events were counted), else "mixed".
    pub source: &'static str,
    pub prompt: u64,
    /// Ollama: eval_count / eval_duration summed over responses, the server's own speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DoneReasons {
    pub stop: u64,
    pub length: u64,
    pub other: u64,
}

/// Requests per second that met every `--slo` (vLLM's goodput).
#[derive(Clone, Debug, Serialize)]
pub struct Goodput {
    pub good: u64,
    pub rps: f64,
    /// Share of completed requests that met the objectives.
    pub ratio: f64,
}

/// Above this share of its cores' time, blast itself is likely the bottleneck.
pub const SATURATED: f64 = 0.9;

/// Achieved rate may fall this far below target before the run counts as behind.
const RATE_TOLERANCE: f64 = 0.01;

/// The result document. Its keys are a contract (see the README): add, never rename.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// When the run started (the engine's common start), RFC 3339 UTC.
    pub started_at: String,
    /// The same instant in unix seconds, with a fraction.
    pub started_at_unix_s: f64,
    /// `--start-at` only: how late the start was, in seconds (0 when on time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_late_s: Option<f64>,
    /// Which part of a run split with `--shard` this is (0 of 1 otherwise).
    pub shard: crate::plan::ShardOf,
    pub elapsed_s: f64,
    pub rps: f64,
    pub requests: Requests,
    pub status: BTreeMap<String, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    /// The first few distinct messages of each error kind that occurred.
    pub error_messages: BTreeMap<&'static str, Vec<String>>,
    pub latency_us: Summary,
    /// Other distributions of the run (`latency_uncorrected_us`, `send_lag_us`, `ttft_us`, ...),
    /// in the order of `Metric::ALL`.
    #[serde(flatten, serialize_with = "ser_pairs")]
    pub distributions: Vec<(&'static str, Summary)>,
    pub transfer: Transfer,
    pub connections: Connections,
    pub client_cpu_us_per_request: f64,
    /// blast's CPU time over (elapsed x cores): near 1, blast was the bottleneck.
    pub client_cpu_utilization: f64,
    pub peak_rss_bytes: u64,
    pub interrupted: bool,
    /// What the figures alone do not say (a limit, a buffering proxy, ...).
    pub warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reasons: Option<DoneReasons>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
    pub timeline: Vec<TimelineRow>,
    /// `--scrape`: what each metrics URL of the target showed over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_metrics: Option<Vec<crate::scrape::TargetMetrics>>,
    /// base64 of each histogram's V2 + DEFLATE serialisation, for exact merging elsewhere.
    pub histograms: BTreeMap<&'static str, String>,
    /// The plan that ran.
    #[serde(serialize_with = "ser_plan")]
    pub config: Arc<Plan>,
}

fn ser_plan<S: serde::Serializer>(plan: &Arc<Plan>, s: S) -> Result<S::Ok, S::Error> {
    plan.serialize(s)
}

/// What the run cost blast itself, measured around it.
#[derive(Clone)]
pub struct SelfCost {
    pub cpu: std::time::Duration,
    pub peak_rss_bytes: u64,
}

/// When the run started on the wall clock, for merging shards' results on absolute time.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub at: std::time::SystemTime,
    /// `--start-at` only: how long after that instant the run started.
    pub late: Option<Duration>,
}

/// A wall-clock instant as RFC 3339 (UTC, microseconds) and as unix seconds.
pub fn wall_clock(at: std::time::SystemTime) -> (String, f64) {
    let unix = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    (humantime::format_rfc3339_micros(at).to_string(), unix)
}

impl Report {
    pub fn build(
        agg: &Aggregator,
        plan: &Arc<Plan>,
        cost: SelfCost,
        started: Started,
        interrupted: bool,
    ) -> Report {
        let (started_at, started_at_unix_s) = wall_clock(started.at);
        let totals = agg.totals();
        let elapsed_s = agg.end.as_secs_f64();
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let status = totals
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code.to_string(), *n))
            .collect();
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| (k.name(), totals.error(*k)))
            .collect();
        let error_messages = ErrorKind::ALL
            .iter()
            .map(|k| (k.name(), totals.messages.of(*k)))
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, m)| (k, m.iter().map(|m| m.to_string()).collect()))
            .collect();
        let mut distributions = Vec::new();
        let mut histograms = BTreeMap::new();
        if let Some(hists) = &agg.hists {
            for (m, h) in hists.enabled() {
                if m != Metric::Latency {
                    distributions.push((m.key(), Summary::of(h)));
                }
                histograms.insert(m.key(), encode_histogram(h));
            }
        }
        let cpu_utilization = if elapsed_s > 0.0 {
            cost.cpu.as_secs_f64() / (elapsed_s * plan.cores as f64)
        } else {
            0.0
        };
        let open_loop = plan.rate.as_ref().map(|spec| {
            open_loop(
                agg,
                spec,
                plan.run_for,
                plan.slack.unwrap_or_default(),
                &RunShape {
                    cpu_utilization,
                    // This process's part of them (`--shard`).
                    conns: plan.shard.share(plan.conns as u64) * plan.pipeline as u64,
                    max_in_flight: plan.max_in_flight.map(|n| plan.shard.share(n)),
                    share: 1.0 / plan.shard.count as f64,
                },
            )
        });
        let mut warnings = Vec::new();
        if cpu_utilization > SATURATED {
            warnings.push(Warning {
                code: "cores_saturated",
                message: "blast's cores were saturated: these figures may describe blast, \
                          not the server; add --cores (or --pipeline) to find the server's limit"
                    .into(),
            });
        }
        if let Some(o) = open_loop.as_ref().filter(|o| o.limited_by != Limit::None) {
            let code = match o.limited_by {
                Limit::Client => "limited_by_client",
                Limit::Connections => "limited_by_connections",
                _ => "limited_by_server",
            };
            warnings.push(Warning {
                code,
                message: format!("the run was limited by {}", o.why),
            });
        }
        if totals.unsolicited > 0 {
            warnings.push(Warning {
                code: "unsolicited_bytes",
                message: format!(
                    "the server sent bytes while no request was in flight on {} connections \
                     (it answered twice, or spoke first): blast closed them; a response that \
                     came that way may have been taken for the next request's",
                    totals.unsolicited
                ),
            });
        }
        if plan.llm.is_some() {
            llm_warnings(&totals, &mut warnings);
        }
        Report {
            tool: "blast",
            version: env!("CARGO_PKG_VERSION"),
            started_at,
            started_at_unix_s,
            start_late_s: started.late.map(|d| d.as_secs_f64()),
            shard: plan.shard,
            elapsed_s,
            rps: per_s(totals.completed),
            requests: Requests {
                sent: totals.sent,
                completed: totals.completed,
                ok: totals.ok,
                failed: totals.failed,
                cut_off: totals.cut_off,
            },
            status,
            errors,
            error_messages,
            latency_us: agg.summary(Metric::Latency).unwrap_or_default(),
            distributions,
            transfer: Transfer {
                bytes_read: totals.bytes_read,
                bytes_written: totals.bytes_written,
                read_bytes_per_s: per_s(totals.bytes_read),
            },
            connections: Connections {
                opened: totals.conns_opened,
                reconnects: totals.reconnects,
                unsolicited: totals.unsolicited,
                tls_handshakes: plan.tls.as_ref().map(|_| totals.tls_handshakes),
                tls_resumed: plan.tls.as_ref().map(|_| totals.tls_resumed),
                tls_ciphers: plan.tls.as_ref().map(|_| {
                    crate::tls::SUITES
                        .iter()
                        .zip(totals.tls_suites)
                        .filter(|(_, n)| *n > 0)
                        .map(|(s, n)| (crate::tls::suite_name(*s), n))
                        .collect()
                }),
            },
            client_cpu_us_per_request: if totals.completed > 0 {
                cost.cpu.as_secs_f64() * 1e6 / totals.completed as f64
            } else {
                0.0
            },
            client_cpu_utilization: cpu_utilization,
            peak_rss_bytes: cost.peak_rss_bytes,
            interrupted,
            warnings,
            open_loop,
            tokens: plan.llm.as_ref().map(|_| Tokens {
                output: totals.tokens,
                per_s: per_s(totals.tokens),
                source: match (totals.tokens_by_server, totals.tokens_by_events) {
                    (_, 0) => "server",
                    (0, _) => "events",
                    _ => "mixed",
                },
                prompt: totals.prompt_tokens,
                server_per_s: (totals.server_eval_ns > 0)
                    .then(|| totals.server_eval_tokens as f64 * 1e9 / totals.server_eval_ns as f64),
            }),
            done_reasons: plan.llm.as_ref().map(|_| DoneReasons {
                stop: totals.done_reasons[0],
                length: totals.done_reasons[1],
                other: totals.done_reasons[2],
            }),
            goodput: plan.llm.as_ref().and_then(|l| l.slo).map(|_| Goodput {
                good: totals.good,
                rps: per_s(totals.good),
                ratio: if totals.completed > 0 {
                    totals.good as f64 / totals.completed as f64
                } else {
                    0.0
                },
            }),
            timeline: agg.timeline.clone(),
            target_metrics: None,
            histograms,
            config: Arc::clone(plan),
        }
    }
}

/// What the LLM figures alone do not say.
fn llm_warnings(totals: &crate::stats::Counters, warnings: &mut Vec<Warning>) {
    let (buffered, timed) = (totals.buffered_streams, totals.timed_streams);
    if buffered > 0 && buffered * 2 > timed {
        warnings.push(Warning {
            code: "buffered_stream",
            message: format!(
                "{buffered} of {timed} streamed responses arrived in one piece (their tokens \
                 at once, the first close to the end): something between blast and the \
                 server (a proxy?) buffers the stream, so ITL and TPOT, and a --slo tpot, \
                 say nothing about the server"
            ),
        });
    }
    if totals.undecodable > 0 {
        warnings.push(Warning {
            code: "undecoded_content_encoding",
            message: format!(
                "{} responses came in a Content-Encoding blast does not decode (see \
                 error_messages.stream); ask for identity, gzip or deflate (drop or change \
                 an Accept-Encoding header)",
                totals.undecodable
            ),
        });
    }
}

fn ser_pairs<S: serde::Serializer>(
    pairs: &[(&'static str, Summary)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// What an open-loop verdict needs to know of the run beyond the aggregator.
struct RunShape {
    cpu_utilization: f64,
    /// conns x pipeline.
    conns: u64,
    max_in_flight: Option<u64>,
    /// The part of the run's sends this process makes (`--shard`).
    share: f64,
}

/// Compare what was started with what was asked for: over the run's duration, or for a
/// run bounded by a request count, up to the last interval in which anything was sent.
/// Then judge what limited it.
fn open_loop(
    agg: &Aggregator,
    spec: &RateSpec,
    duration: Option<Duration>,
    slack: Duration,
    shape: &RunShape,
) -> OpenLoop {
    let totals = agg.totals();
    let (span, target) = match duration {
        // The engine sends what is due before the end, nothing at or after it: [0, d).
        Some(d) => (
            d.as_secs_f64(),
            spec.mean_rate(Duration::ZERO, d) * shape.share,
        ),
        None => {
            let rows = agg
                .timeline
                .iter()
                .take_while(|r| r.sent > 0 || r.t_s == 0.0);
            let (mut span, mut expected) = (0.0, 0.0);
            for r in rows {
                span = r.t_s;
                expected += r.target_rps * r.dt_s;
            }
            (span, if span > 0.0 { expected / span } else { 0.0 })
        }
    };
    let achieved_rps = if span > 0.0 {
        totals.sent as f64 / span
    } else {
        0.0
    };
    let send_lag_p99_us = agg.summary(Metric::SendLag).map_or(0, |s| s.p99);
    // Lateness within `--slack` was asked for; only what goes beyond it counts.
    let allowed = LAG_ALLOWANCE_US + slack.as_micros() as u64;
    let (steady_sends, late_sends) = agg.steady_send_lag.as_ref().map_or((0, 0), |h| {
        (h.len(), h.len() - h.count_between(0, allowed).min(h.len()))
    });
    let (capacity, capped) = match shape.max_in_flight {
        Some(cap) if cap < shape.conns => (cap, true),
        _ => (shape.conns, false),
    };
    let elapsed_s = agg.end.as_secs_f64();
    let mean_in_flight = match agg.summary(Metric::LatencyUncorrected) {
        Some(s) if elapsed_s > 0.0 => totals.completed as f64 / elapsed_s * s.mean / 1e6,
        _ => 0.0,
    };
    // The second half of the sending window: the rows that start in it and end by its end.
    let half: Vec<&TimelineRow> = agg
        .timeline
        .iter()
        .filter(|r| r.t_s - r.dt_s >= span / 2.0 - 1e-9 && r.t_s <= span + 1e-9)
        .collect();
    let in_flight_mid = agg
        .timeline
        .iter()
        .take_while(|r| r.t_s < span / 2.0 + 1e-9)
        .last()
        .map_or(0, |r| r.in_flight);
    let evidence = Evidence {
        target_rps: target,
        achieved_rps,
        missed: totals.missed,
        sent: totals.sent,
        failed: totals.failed,
        cpu_utilization: shape.cpu_utilization,
        steady_sends,
        late_sends,
        capacity,
        capped,
        peak_in_flight: agg.timeline.iter().map(|r| r.in_flight).max().unwrap_or(0),
        mean_in_flight,
        half_sent: half.iter().map(|r| r.sent).sum(),
        half_answered: half.iter().map(|r| r.completed + r.errors).sum(),
        in_flight_mid,
        in_flight_end: half.last().map_or(0, |r| r.in_flight),
    };
    let (limited_by, why) = verdict(&evidence);
    OpenLoop {
        target_rps: target,
        achieved_rps,
        missed: totals.missed,
        send_lag_p99_us,
        kept_up: matches!(limited_by, Limit::None | Limit::Server),
        limited_by,
        why,
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of `encode_histogram`, for merging results.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Arrivals, Pattern};
    use crate::stats::{new_histogram, Counters, Hists, Snapshot};

    #[test]
    fn histograms_round_trip_exactly() {
        let mut h = new_histogram();
        for v in [1u64, 5, 100, 12_345, 9_999_999] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode_histogram("not base64!").is_err());
    }

    /// A lightly loaded client with plenty of connections.
    const SHAPE: RunShape = RunShape {
        cpu_utilization: 0.02,
        conns: 100,
        max_in_flight: None,
        share: 1.0,
    };

    /// A one-shard run that sent `sent` requests by `at`, with no send lag recorded.
    fn finished(sent: u64, at: Duration) -> Aggregator {
        let mut agg = Aggregator::new(1, Duration::from_secs(1), None);
        agg.push(Snapshot {
            shard: 0,
            seq: 0,
            at,
            last: true,
            counters: Counters {
                sent,
                ..Default::default()
            },
            hists: Hists::new(&[Metric::Latency, Metric::SendLag]),
        });
        agg
    }

    /// Issue 11: `--rate 10 --pattern burst --duration 1s` has 60 sends due (the burst of 50 at
    /// 0 and 10 at 10 req/s). The target used to be the burst spread over its 10 s period, 15,
    /// by which a run that sent only the burst had kept up.
    #[test]
    fn open_loop_target_of_a_short_burst_run_is_what_was_due() {
        let spec = RateSpec {
            rate: 10.0,
            pattern: Pattern::Burst {
                size: 50,
                every: Duration::from_secs(10),
            },
            arrivals: Arrivals::Uniform,
            seed: 1,
        };
        let run = Duration::from_secs(1);
        let o = open_loop(&finished(60, run), &spec, Some(run), Duration::ZERO, &SHAPE);
        assert_eq!(o.target_rps, 60.0);
        assert_eq!(o.achieved_rps, 60.0);
        assert!(o.kept_up, "{o:?}");
        let o = open_loop(&finished(50, run), &spec, Some(run), Duration::ZERO, &SHAPE);
        assert!(!o.kept_up, "{o:?}");
    }

    /// A short run that sent what was due, on a lightly loaded client with plenty of
    /// connections and a server that keeps pace.
    fn healthy() -> Evidence {
        Evidence {
            target_rps: 100.0,
            achieved_rps: 100.0,
            sent: 200,
            cpu_utilization: 0.02,
            steady_sends: 100,
            capacity: 100,
            peak_in_flight: 2,
            mean_in_flight: 0.5,
            half_sent: 100,
            half_answered: 100,
            in_flight_mid: 1,
            in_flight_end: 1,
            ..Evidence::default()
        }
    }

    /// Issue 12: one late send (the first, or a lone hiccup) does not make blast the limit,
    /// however much of a small sample's p99 it is.
    #[test]
    fn a_few_late_sends_are_not_a_limit() {
        assert_eq!(verdict(&healthy()).0, Limit::None);
        let few_late = Evidence {
            late_sends: 3,
            steady_sends: 50,
            ..healthy()
        };
        assert_eq!(verdict(&few_late).0, Limit::None);
        // Many late sends, but not more than 1% of a long run's.
        let rare = Evidence {
            late_sends: 20,
            steady_sends: 10_000,
            ..healthy()
        };
        assert_eq!(verdict(&rare).0, Limit::None);
    }

    #[test]
    fn busy_cores_or_many_late_sends_make_blast_the_limit() {
        let busy = Evidence {
            cpu_utilization: 0.95,
            ..healthy()
        };
        assert_eq!(verdict(&busy).0, Limit::Client);
        let late = Evidence {
            late_sends: 30,
            steady_sends: 1_000,
            ..healthy()
        };
        let (limit, why) = verdict(&late);
        assert_eq!(limit, Limit::Client);
        assert!(why.contains("30 of 1000"), "{why}");
        // Behind schedule with nothing else to blame.
        let behind = Evidence {
            achieved_rps: 90.0,
            missed: 20,
            ..healthy()
        };
        assert_eq!(verdict(&behind).0, Limit::Client);
    }

    /// A dead target at 1% CPU: every request failed; the server is the limit, not blast.
    #[test]
    fn a_dead_target_is_the_server() {
        let dead = Evidence {
            achieved_rps: 20.0,
            sent: 40,
            failed: 40,
            cpu_utilization: 0.01,
            half_answered: 20,
            half_sent: 20,
            ..healthy()
        };
        let (limit, why) = verdict(&dead);
        assert_eq!(limit, Limit::Server);
        assert!(why.contains("40 of 40"), "{why}");
    }

    /// In-flight grows, completions fall behind the sends, blast 15% busy: the server.
    #[test]
    fn a_server_falling_behind_is_the_server() {
        let slow = Evidence {
            cpu_utilization: 0.15,
            half_sent: 100,
            half_answered: 50,
            in_flight_mid: 50,
            in_flight_end: 100,
            peak_in_flight: 100,
            mean_in_flight: 50.0,
            capacity: 400,
            ..healthy()
        };
        assert_eq!(verdict(&slow).0, Limit::Server);
        // The same figures in a run too short to judge the server's pace: nothing to blame.
        let short = Evidence {
            half_sent: 10,
            half_answered: 5,
            ..slow.clone()
        };
        assert_eq!(verdict(&short).0, Limit::None);
        // In flight high but steady (long responses): not falling behind.
        let steady = Evidence {
            in_flight_mid: 100,
            in_flight_end: 100,
            ..slow
        };
        assert_eq!(verdict(&steady).0, Limit::None);
    }

    /// All connections (or all `--max-in-flight` permits) busy and the rate not met: the
    /// advice names the option to raise.
    #[test]
    fn busy_connections_name_the_option_to_raise() {
        let capped = Evidence {
            achieved_rps: 40.0,
            capacity: 4,
            capped: true,
            peak_in_flight: 3,
            mean_in_flight: 3.9,
            ..healthy()
        };
        let (limit, why) = verdict(&capped);
        assert_eq!(limit, Limit::Connections);
        assert!(why.contains("--max-in-flight"), "{why}");
        let conns = Evidence {
            capped: false,
            peak_in_flight: 4,
            mean_in_flight: 1.0,
            ..capped.clone()
        };
        let (limit, why) = verdict(&conns);
        assert_eq!(limit, Limit::Connections);
        assert!(why.contains("--conns"), "{why}");
        // Busy but on schedule: no limit reached.
        let on_time = Evidence {
            achieved_rps: 100.0,
            ..capped
        };
        assert_eq!(verdict(&on_time).0, Limit::None);
    }

    /// Send lag is judged after start-up, against `--slack` + 1 ms: sends late by design
    /// are fine, and the first interval (connects) does not count.
    #[test]
    fn send_lag_is_judged_after_start_up_and_beyond_slack() {
        let spec = RateSpec {
            rate: 100.0,
            pattern: Pattern::Constant,
            arrivals: Arrivals::Uniform,
            seed: 1,
        };
        let run = Duration::from_secs(2);
        let mut agg = Aggregator::new(1, Duration::from_secs(1), None);
        let hists = |lag_us: u64, n: u64| {
            let mut h = Hists::new(&[Metric::Latency, Metric::SendLag]);
            for _ in 0..n {
                h.record(Metric::SendLag, Duration::from_micros(lag_us));
            }
            h
        };
        let snap = |seq: u64, sent: u64, hists: Hists| Snapshot {
            shard: 0,
            seq,
            at: Duration::from_secs(seq + 1),
            last: seq == 1,
            counters: Counters {
                sent,
                completed: sent,
                ..Default::default()
            },
            hists,
        };
        // Start-up: every send 50 ms late (connects). Then 1.1 ms late, within 150 us + 1 ms.
        agg.push(snap(0, 100, hists(50_000, 100)));
        agg.push(snap(1, 200, hists(1_100, 100)));
        let o = open_loop(&agg, &spec, Some(run), Duration::from_micros(150), &SHAPE);
        assert_eq!((o.limited_by, o.kept_up), (Limit::None, true), "{o:?}");
        assert!(o.send_lag_p99_us >= 1_100, "{o:?}");
        let o = open_loop(&agg, &spec, Some(run), Duration::ZERO, &SHAPE);
        assert_eq!((o.limited_by, o.kept_up), (Limit::Client, false), "{o:?}");
    }

    /// The target covers [0, duration): a send due at the end itself is not part of the run
    /// (the engine stops with the first send time at or past it).
    #[test]
    fn open_loop_target_ends_with_the_duration() {
        let spec = RateSpec {
            rate: 0.0,
            pattern: Pattern::Burst {
                size: 20,
                every: Duration::from_millis(500),
            },
            arrivals: Arrivals::Uniform,
            seed: 1,
        };
        let run = Duration::from_secs(2);
        let o = open_loop(&finished(80, run), &spec, Some(run), Duration::ZERO, &SHAPE);
        assert_eq!(o.target_rps, 40.0);
        assert!(o.kept_up, "{o:?}");
    }
}

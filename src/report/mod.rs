//! The result of a run as plain data (`Report`), and its printers. Printers take any
//! `Write`; none of them touches a socket.

pub mod csv;
pub mod json;
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
    /// Achieved within 1% of the target and send lag p99 within 1 ms plus `--slack`.
    pub kept_up: bool,
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

/// Achieved rate may fall this far below target before blast calls itself overloaded.
const RATE_TOLERANCE: f64 = 0.01;
/// Send lag p99 above this (plus `--slack`) means blast's own scheduling could not keep up.
const MAX_SEND_LAG_P99_US: u64 = 1_000;

/// The result document. Its keys are a contract (see the README): add, never rename.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reasons: Option<DoneReasons>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
    pub timeline: Vec<TimelineRow>,
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
pub struct SelfCost {
    pub cpu: std::time::Duration,
    pub peak_rss_bytes: u64,
}

impl Report {
    pub fn build(agg: &Aggregator, plan: &Arc<Plan>, cost: SelfCost, interrupted: bool) -> Report {
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
        Report {
            tool: "blast",
            version: env!("CARGO_PKG_VERSION"),
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
            },
            client_cpu_us_per_request: if totals.completed > 0 {
                cost.cpu.as_secs_f64() * 1e6 / totals.completed as f64
            } else {
                0.0
            },
            client_cpu_utilization: if elapsed_s > 0.0 {
                cost.cpu.as_secs_f64() / (elapsed_s * plan.cores as f64)
            } else {
                0.0
            },
            peak_rss_bytes: cost.peak_rss_bytes,
            interrupted,
            open_loop: plan
                .rate
                .as_ref()
                .map(|spec| open_loop(agg, spec, plan.run_for, plan.slack.unwrap_or_default())),
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
            histograms,
            config: Arc::clone(plan),
        }
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

/// Compare what was started with what was asked for: over the run's duration, or for a
/// run bounded by a request count, up to the last interval in which anything was sent.
fn open_loop(
    agg: &Aggregator,
    spec: &RateSpec,
    duration: Option<Duration>,
    slack: Duration,
) -> OpenLoop {
    let totals = agg.totals();
    let (span, target) = match duration {
        // The engine sends what is due before the end, nothing at or after it: [0, d).
        Some(d) => (d.as_secs_f64(), spec.mean_rate(Duration::ZERO, d)),
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
    OpenLoop {
        target_rps: target,
        achieved_rps,
        missed: totals.missed,
        send_lag_p99_us,
        // Lateness within `--slack` was asked for; only what goes beyond it counts.
        kept_up: achieved_rps >= target * (1.0 - RATE_TOLERANCE)
            && send_lag_p99_us <= MAX_SEND_LAG_P99_US + slack.as_micros() as u64,
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
        let o = open_loop(&finished(60, run), &spec, Some(run), Duration::ZERO);
        assert_eq!(o.target_rps, 60.0);
        assert_eq!(o.achieved_rps, 60.0);
        assert!(o.kept_up, "{o:?}");
        let o = open_loop(&finished(50, run), &spec, Some(run), Duration::ZERO);
        assert!(!o.kept_up, "{o:?}");
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
        let o = open_loop(&finished(80, run), &spec, Some(run), Duration::ZERO);
        assert_eq!(o.target_rps, 40.0);
        assert!(o.kept_up, "{o:?}");
    }
}

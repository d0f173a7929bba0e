//! `--prometheus ADDR`: the run's figures as Prometheus metrics on `http://ADDR/metrics`, in
//! the Prometheus text format (0.0.4), encoded by the official `prometheus-client` crate.
//!
//! Fed once per interval from the aggregator (`crate::run_with`), never from the shards:
//! counters are set to the run's cumulative counters at the end of each row (so the last
//! scrape equals the result document's totals), and the histograms take each row's
//! HdrHistograms, bucket by bucket. A small HTTP server (tiny_http) answers scrapes on
//! threads of its own, under the same lock as the updates, so a scrape never sees half an
//! interval.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::aggregate::Interval;
use crate::plan::Plan;
use crate::stats::{Counters, ErrorKind, Metric};

/// Bucket upper bounds, in seconds. Whole requests and first tokens: loopback answers in
/// 100 us, an LLM's in minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Gaps between tokens: finer where models stream (10 to 100 ms a token).
const TOKEN_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 2.5,
];
/// Send lag: on schedule is tens of microseconds late; a second late is far behind.
const LAG_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// The metric name (after `blast_`), help and buckets of a distribution.
fn describe(m: Metric) -> (&'static str, &'static str, &'static [f64]) {
    match m {
        Metric::Latency => (
            "latency_seconds",
            "End-to-end latency; in an open loop from the intended send time",
            LATENCY_BUCKETS,
        ),
        Metric::LatencyUncorrected => (
            "latency_uncorrected_seconds",
            "Open loop: latency from the actual write (service time)",
            LATENCY_BUCKETS,
        ),
        Metric::SendLag => (
            "send_lag_seconds",
            "Open loop: how late each write was against its intended time",
            LAG_BUCKETS,
        ),
        Metric::Ttfb => ("ttfb_seconds", "LLM: time to first byte", LATENCY_BUCKETS),
        Metric::Ttft => (
            "ttft_seconds",
            "LLM: time to first token event",
            LATENCY_BUCKETS,
        ),
        Metric::Itl => (
            "itl_seconds",
            "LLM: gaps between consecutive token events",
            TOKEN_BUCKETS,
        ),
        Metric::Tpot => (
            "tpot_seconds",
            "LLM: (end to end - TTFT) / (tokens - 1), per response",
            TOKEN_BUCKETS,
        ),
        Metric::ServerLoad => (
            "server_load_seconds",
            "Ollama: load_duration",
            LATENCY_BUCKETS,
        ),
        Metric::ServerPromptEval => (
            "server_prompt_eval_seconds",
            "Ollama: prompt_eval_duration",
            LATENCY_BUCKETS,
        ),
        Metric::ServerEval => (
            "server_eval_seconds",
            "Ollama: eval_duration",
            LATENCY_BUCKETS,
        ),
        Metric::ServerQueue => (
            "server_queue_seconds",
            "Ollama: total - load - prompt eval - eval (time queued)",
            LATENCY_BUCKETS,
        ),
        Metric::Connect => (
            "connect_seconds",
            "TCP connects (https:// runs and Connection: close)",
            LATENCY_BUCKETS,
        ),
        Metric::TlsHandshake => (
            "tls_handshake_seconds",
            "https://: TLS handshakes, from connected to the handshake's end",
            LATENCY_BUCKETS,
        ),
    }
}

/// A Prometheus histogram fed from HdrHistograms (microseconds): each recorded value counts
/// in the first bucket whose bound it does not exceed, at HdrHistogram's precision (3
/// significant digits), and the sum takes each value's midpoint.
#[derive(Clone, Debug)]
struct HdrBuckets {
    bounds: &'static [f64],
    state: Arc<Mutex<BucketState>>,
}

#[derive(Debug, Default)]
struct BucketState {
    /// Per bucket, not cumulative (the encoder adds them up); the +Inf bucket is `count`.
    counts: Vec<u64>,
    count: u64,
    sum_s: f64,
}

impl HdrBuckets {
    fn new(bounds: &'static [f64]) -> HdrBuckets {
        HdrBuckets {
            bounds,
            state: Arc::new(Mutex::new(BucketState {
                counts: vec![0; bounds.len()],
                ..Default::default()
            })),
        }
    }

    fn add(&self, h: &Histogram<u64>) {
        let mut s = lock(&self.state);
        // One step per distinct recorded value (a few thousand at most), not per request.
        for v in h.iter_recorded() {
            let (us, n) = (v.value_iterated_to(), v.count_at_value());
            let i = self
                .bounds
                .partition_point(|b| ((b * 1e6).round() as u64) < us);
            if let Some(c) = s.counts.get_mut(i) {
                *c += n;
            }
            s.count += n;
            s.sum_s += h.median_equivalent(us) as f64 * n as f64 / 1e6;
        }
    }
}

impl EncodeMetric for HdrBuckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = lock(&self.state);
        let buckets: Vec<(f64, u64)> = self.bounds.iter().copied().zip(s.counts.clone()).collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum_s, s.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A scrape that panicked leaves the figures as they were: still worth serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Handles on the registered metrics (each a shared handle: the registry holds a clone).
struct Metrics {
    sent: Counter,
    requests: Family<OutcomeLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    responses: Family<CodeLabel, Counter>,
    /// Open loop only.
    missed: Option<Counter>,
    bytes_read: Counter,
    bytes_written: Counter,
    conns_opened: Counter,
    reconnects: Counter,
    /// LLM only: generated, prompt tokens; responses within every `--slo`.
    tokens: Option<(Counter, Counter, Counter)>,
    in_flight: Gauge,
    target_rps: FloatGauge,
    sent_rps: FloatGauge,
    completed_rps: FloatGauge,
    running: Gauge,
    elapsed: FloatGauge,
    hists: Vec<(Metric, HdrBuckets)>,
}

/// Set a counter to `to`, never down.
fn advance(c: &Counter, to: u64) {
    c.inc_by(to.saturating_sub(c.get()));
}

impl Metrics {
    fn register(reg: &mut Registry, plan: &Plan) -> Metrics {
        fn add<M: prometheus_client::registry::Metric + Clone>(
            reg: &mut Registry,
            name: &str,
            help: &str,
            m: M,
        ) -> M {
            reg.register(name, help, m.clone());
            m
        }
        let mode = match plan.rate {
            Some(_) => "open",
            None => "closed",
        };
        let api = plan.llm.as_ref().map_or("none", |l| l.api.name());
        reg.register(
            "run",
            "The run: target URL, LLM API, loop (open: --rate; closed: as fast as answered)",
            Info::new(vec![
                ("url", plan.url.clone()),
                ("api", api.to_string()),
                ("loop", mode.to_string()),
            ]),
        );
        let m = Metrics {
            sent: add(reg, "requests_sent", "Requests started", Counter::default()),
            requests: add(
                reg,
                "requests",
                "Requests ended, by outcome: ok (2xx), non_2xx, failed (see blast_errors_total), cut_off (in flight at Ctrl-C)",
                Family::default(),
            ),
            errors: add(
                reg,
                "errors",
                "Requests failed, by kind",
                Family::default(),
            ),
            responses: add(
                reg,
                "responses",
                "Response heads by status code",
                Family::default(),
            ),
            missed: plan.rate.as_ref().map(|_| {
                add(
                    reg,
                    "requests_missed",
                    "Open loop: requests due that could not be sent in time",
                    Counter::default(),
                )
            }),
            bytes_read: add(reg, "read_bytes", "Bytes read", Counter::default()),
            bytes_written: add(reg, "written_bytes", "Bytes written", Counter::default()),
            conns_opened: add(
                reg,
                "connections_opened",
                "Connections opened",
                Counter::default(),
            ),
            reconnects: add(
                reg,
                "reconnects",
                "Connections opened again after the server closed one",
                Counter::default(),
            ),
            tokens: plan.llm.as_ref().map(|_| {
                (
                    add(reg, "tokens", "LLM: generated tokens", Counter::default()),
                    add(
                        reg,
                        "prompt_tokens",
                        "LLM: prompt tokens, as the server counted them",
                        Counter::default(),
                    ),
                    add(
                        reg,
                        "requests_good",
                        "LLM: responses that met every --slo",
                        Counter::default(),
                    ),
                )
            }),
            in_flight: add(
                reg,
                "in_flight",
                "Requests in flight at the end of the last interval",
                Gauge::default(),
            ),
            target_rps: add(
                reg,
                "target_requests_per_second",
                "Open loop: requests due per second in the last interval (0 in a closed loop)",
                FloatGauge::default(),
            ),
            sent_rps: add(
                reg,
                "sent_requests_per_second",
                "Requests started per second in the last interval (the achieved rate)",
                FloatGauge::default(),
            ),
            completed_rps: add(
                reg,
                "completed_requests_per_second",
                "Responses completed per second in the last interval",
                FloatGauge::default(),
            ),
            running: add(
                reg,
                "running",
                "1 while the run goes, 0 once it has ended (--prometheus-linger)",
                Gauge::default(),
            ),
            elapsed: add(
                reg,
                "elapsed_seconds",
                "Time since the run started, at the end of the last interval",
                FloatGauge::default(),
            ),
            hists: plan
                .metrics
                .iter()
                .map(|&metric| {
                    let (name, help, bounds) = describe(metric);
                    (metric, add(reg, name, help, HdrBuckets::new(bounds)))
                })
                .collect(),
        };
        // Every kind and outcome from the first scrape, so that a dashboard sees zeros, not
        // gaps.
        for kind in ErrorKind::ALL {
            let _ = m.errors.get_or_create(&KindLabel { kind: kind.name() });
        }
        for outcome in OUTCOMES {
            let _ = m.requests.get_or_create(&OutcomeLabel { outcome });
        }
        m.running.set(1);
        m
    }

    fn update(&self, i: &Interval) {
        let c: &Counters = i.cumulative;
        advance(&self.sent, c.sent);
        let ended = [c.ok, c.completed - c.ok, c.failed, c.cut_off];
        for (outcome, n) in OUTCOMES.into_iter().zip(ended) {
            advance(&self.requests.get_or_create(&OutcomeLabel { outcome }), n);
        }
        for kind in ErrorKind::ALL {
            let label = KindLabel { kind: kind.name() };
            advance(&self.errors.get_or_create(&label), c.error(kind));
        }
        for (code, &n) in c.status.iter().enumerate().filter(|(_, n)| **n > 0) {
            let label = CodeLabel { code: code as u16 };
            advance(&self.responses.get_or_create(&label), n);
        }
        if let Some(missed) = &self.missed {
            advance(missed, c.missed);
        }
        advance(&self.bytes_read, c.bytes_read);
        advance(&self.bytes_written, c.bytes_written);
        advance(&self.conns_opened, c.conns_opened);
        advance(&self.reconnects, c.reconnects);
        if let Some((tokens, prompt, good)) = &self.tokens {
            advance(tokens, c.tokens);
            advance(prompt, c.prompt_tokens);
            advance(good, c.good);
        }
        let row = i.row;
        self.in_flight.set(row.in_flight as i64);
        self.target_rps.set(row.target_rps);
        let per_s = |n: u64| {
            if row.dt_s > 0.0 {
                n as f64 / row.dt_s
            } else {
                0.0
            }
        };
        self.sent_rps.set(per_s(row.sent));
        self.completed_rps.set(row.rps);
        self.elapsed.set(row.t_s);
        if let Some(hists) = i.hists {
            for (metric, buckets) in &self.hists {
                if let Some(h) = hists.get(*metric) {
                    buckets.add(h);
                }
            }
        }
    }
}

/// `blast_requests_total`'s outcomes: with `failed` and `cut_off` they add up to every
/// request that ended.
const OUTCOMES: [&str; 4] = ["ok", "non_2xx", "failed", "cut_off"];

struct State {
    registry: Registry,
    metrics: Metrics,
}

/// The `/metrics` endpoint of one run. Dropping it stops the server.
pub struct Exporter {
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Exporter {
    /// Listen on `addr` (before the run starts, so that a busy port is a user error) and serve
    /// on a thread of its own.
    pub fn start(addr: SocketAddr, plan: &Plan) -> std::io::Result<Exporter> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let mut registry = Registry::with_prefix("blast");
        let metrics = Metrics::register(&mut registry, plan);
        let state = Arc::new(Mutex::new(State { registry, metrics }));
        let thread = {
            let (server, state) = (server.clone(), state.clone());
            std::thread::Builder::new()
                .name("blast-prometheus".into())
                .spawn(move || serve(&server, &state))?
        };
        Ok(Exporter {
            state,
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// Where it listens (the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Take one closed interval.
    pub fn update(&self, interval: &Interval) {
        lock(&self.state).metrics.update(interval);
    }

    /// The run has ended: `blast_running` drops to 0.
    pub fn finish(&self) {
        lock(&self.state).metrics.running.set(0);
    }

    /// The exposition as a scrape sees it.
    pub fn render(&self) -> String {
        render(&lock(&self.state).registry)
    }

    /// Go on serving for `linger`, or until Ctrl-C / SIGTERM.
    pub fn linger(&self, linger: Duration) {
        let until = Instant::now() + linger;
        while !crate::engine::interrupted() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        // The thread ends after the answer it may be writing; a scraper that stopped reading
        // must not hold blast's exit for long, so it is left behind after a second.
        let Some(t) = self.thread.take() else { return };
        let until = Instant::now() + Duration::from_secs(1);
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug of ours.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        text = format!("# blast could not encode its metrics: {e}\n");
    }
    text
}

/// Answer requests until `unblock`: `GET /metrics` (any query), 404 for any other path.
fn serve(server: &tiny_http::Server, state: &Mutex<State>) {
    use tiny_http::{Header, Method, Response};
    let header = |name: &str, value: &str| {
        Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant header")
    };
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let method = request.method().clone();
        let response = match (&method, path) {
            (Method::Get | Method::Head, "/metrics") => {
                let text = render(&lock(state).registry);
                Response::from_string(text).with_header(header(
                    "Content-Type",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ))
            }
            (_, "/metrics") => Response::from_string("only GET /metrics\n")
                .with_status_code(405)
                .with_header(header("Allow", "GET, HEAD")),
            _ => Response::from_string("blast serves its metrics on /metrics\n")
                .with_status_code(404),
        };
        // A scraper that hung up is its own business.
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Hists;

    #[test]
    fn hdr_values_land_in_their_buckets() {
        let b = HdrBuckets::new(&[0.001, 0.01, 1.0]);
        let mut h = crate::stats::new_histogram();
        for us in [1u64, 999, 1000, 1001, 9_000, 500_000, 5_000_000] {
            h.record(us).unwrap();
        }
        b.add(&h);
        b.add(&h);
        let s = lock(&b.state);
        // 1 us, 999 us and 1 ms are <= 1 ms; 1.001 ms and 9 ms <= 10 ms; 0.5 s <= 1 s; 5 s
        // only in +Inf.
        assert_eq!(s.counts, [6, 4, 2]);
        assert_eq!(s.count, 14);
        let sum: f64 = 2.0 * (1.0 + 999.0 + 1000.0 + 1001.0 + 9000.0 + 500_000.0 + 5e6) / 1e6;
        assert!((s.sum_s - sum).abs() / sum < 1e-3, "{} vs {sum}", s.sum_s);
    }

    #[test]
    fn parsing_refuses_what_is_not_an_address() {
        use crate::plan::parse_listen_addr as p;
        assert_eq!(p("127.0.0.1:9464").unwrap().port(), 9464);
        assert_eq!(p("[::1]:0").unwrap().ip().to_string(), "::1");
        assert_eq!(p(":9464").unwrap().ip().to_string(), "0.0.0.0");
        assert_eq!(p("localhost:1").unwrap().ip().to_string(), "127.0.0.1");
        for bad in [
            "9464",
            "127.0.0.1",
            "example.com:80",
            "1.2.3.4:70000",
            ":x",
            "",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histograms_encode_cumulative_buckets() {
        let mut reg = Registry::with_prefix("t");
        let b = HdrBuckets::new(LAG_BUCKETS);
        reg.register("lag_seconds", "x", b.clone());
        let mut hists = Hists::new(&[Metric::SendLag]);
        hists.record(Metric::SendLag, Duration::from_micros(30));
        b.add(hists.get(Metric::SendLag).unwrap());
        let text = render(&reg);
        assert!(text.contains("# TYPE t_lag_seconds histogram"), "{text}");
        assert!(
            text.contains("t_lag_seconds_bucket{le=\"2.5e-05\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("t_lag_seconds_bucket{le=\"5e-05\"} 1"),
            "{text}"
        );
        assert!(text.contains("t_lag_seconds_count 1"), "{text}");
    }
}

//! Service-level objectives and goodput (vLLM's definition: requests per second that met
//! every objective).

use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Slo {
    #[serde(serialize_with = "ser_opt_ms")]
    pub ttft: Option<Duration>,
    #[serde(serialize_with = "ser_opt_ms")]
    pub tpot: Option<Duration>,
    #[serde(serialize_with = "ser_opt_ms")]
    pub e2e: Option<Duration>,
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64() * 1e3),
        None => s.serialize_none(),
    }
}

/// One response's figures, as far as it has them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub ttft: Option<Duration>,
    pub tpot: Option<Duration>,
    pub e2e: Duration,
}

impl Slo {
    /// "ttft=500ms,tpot=50ms,e2e=10s" (any subset, at least one).
    pub fn parse(text: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--slo: {part:?} is not NAME=DURATION (e.g. ttft=500ms)"))?;
            let d = humantime::parse_duration(value.trim())
                .map_err(|e| format!("--slo: cannot read {value:?} as a duration ({e})"))?;
            if d.is_zero() {
                return Err(format!("--slo: {name} must be greater than zero"));
            }
            let slot = match name.trim() {
                "ttft" => &mut slo.ttft,
                "tpot" => &mut slo.tpot,
                "e2e" => &mut slo.e2e,
                other => {
                    return Err(format!(
                        "--slo: unknown objective {other:?} (use ttft, tpot, e2e)"
                    ))
                }
            };
            *slot = Some(d);
        }
        if slo == Slo::default() {
            return Err("--slo: give at least one objective, e.g. ttft=500ms".into());
        }
        Ok(slo)
    }

    pub fn is_set(&self) -> bool {
        *self != Slo::default()
    }

    /// Did a response meet every objective? A figure the response lacks (no token at all:
    /// no TTFT) fails its objective; TPOT is undefined for one token and then passes.
    pub fn met(&self, m: &Measured) -> bool {
        let within = |limit: Option<Duration>, value: Option<Duration>, missing_ok: bool| match (
            limit, value,
        ) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l,
            (Some(_), None) => missing_ok,
        };
        within(self.ttft, m.ttft, false)
            && within(self.tpot, m.tpot, true)
            && within(self.e2e, Some(m.e2e), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn parses() {
        let s = Slo::parse("ttft=500ms, tpot=50ms,e2e=10s").unwrap();
        assert_eq!(
            s,
            Slo {
                ttft: Some(MS(500)),
                tpot: Some(MS(50)),
                e2e: Some(MS(10_000))
            }
        );
        assert_eq!(Slo::parse("e2e=2s").unwrap().e2e, Some(MS(2000)));
        for bad in ["", "ttft", "ttft=fast", "ttft=0ms", "latency=1s", ","] {
            assert!(Slo::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn goodput_rules() {
        let s = Slo::parse("ttft=100ms,tpot=10ms").unwrap();
        let m = |ttft: Option<u64>, tpot: Option<u64>| Measured {
            ttft: ttft.map(MS),
            tpot: tpot.map(MS),
            e2e: MS(5000),
        };
        assert!(s.met(&m(Some(100), Some(10))));
        assert!(!s.met(&m(Some(101), Some(10))));
        assert!(!s.met(&m(Some(50), Some(11))));
        assert!(
            !s.met(&m(None, None)),
            "no token at all cannot meet a TTFT objective"
        );
        assert!(s.met(&m(Some(50), None)), "a single token has no TPOT");
        assert!(!Slo::parse("e2e=1s").unwrap().met(&m(Some(1), None)));
    }
}

//! Named scenarios: the presets of the users' former load-test menu, as blast options.
//! Like that menu they speak Ollama's /api/generate with its prompt mixes; options given
//! after the scenario's name override the preset's (`--api openai-chat`, or `--api none`
//! for plain HTTP).

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub args: &'static [&'static str],
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "queue-stress",
        about: "many connections at a modest rate, to fill the server's queue (500 requests)",
        args: &[
            "--api",
            "ollama-generate",
            "--prompts",
            "short,medium",
            "--conns",
            "100",
            "--rate",
            "25",
            "--requests",
            "500",
        ],
    },
    Scenario {
        name: "burst",
        about: "50 requests at once every 10 s, for 1 minute",
        args: &[
            "--api",
            "ollama-generate",
            "--conns",
            "100",
            "--pattern",
            "burst",
            "--burst-size",
            "50",
            "--burst-every",
            "10s",
            "--duration",
            "1m",
        ],
    },
    Scenario {
        name: "ramp",
        about: "from 0 to 30 req/s over 5 minutes",
        args: &[
            "--api",
            "ollama-generate",
            "--conns",
            "100",
            "--pattern",
            "ramp",
            "--rate",
            "30",
            "--duration",
            "5m",
        ],
    },
    Scenario {
        name: "spike",
        about: "10 req/s with a 5 s spike to 50 req/s every 30 s, for 2 minutes",
        args: &[
            "--api",
            "ollama-generate",
            "--conns",
            "100",
            "--pattern",
            "spike",
            "--rate",
            "10",
            "--spike-rate",
            "50",
            "--spike-len",
            "5s",
            "--spike-every",
            "30s",
            "--duration",
            "2m",
        ],
    },
    Scenario {
        name: "chaos",
        about: "random rates up to 20 req/s held 1-10 s each (seeded), for 2 minutes",
        args: &[
            "--api",
            "ollama-generate",
            "--prompts",
            "short,medium,long",
            "--conns",
            "90",
            "--pattern",
            "chaos",
            "--rate",
            "20",
            "--duration",
            "2m",
        ],
    },
    Scenario {
        name: "quick",
        about: "2 minutes at 40 req/s over 60 connections",
        args: &[
            "--api",
            "ollama-generate",
            "--prompts",
            "short",
            "--conns",
            "60",
            "--rate",
            "40",
            "--duration",
            "2m",
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::plan::Spec;
    use clap::Parser;

    #[test]
    fn every_scenario_makes_a_valid_plan_and_options_override() {
        for s in SCENARIOS {
            let mut argv = vec!["blast"];
            argv.extend_from_slice(s.args);
            argv.extend_from_slice(&["--duration", "2m", "http://127.0.0.1:9/"]);
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let spec = Spec::parse(&cli.run, &crate::plan::allowed_cpus())
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(
                spec.run_for,
                Some(std::time::Duration::from_secs(120)),
                "{}",
                s.name
            );
        }
        assert!(find("quick").is_some());
        assert!(find("nope").is_none());
    }
}

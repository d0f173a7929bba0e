//! `blast mock`: a thread-per-core fake LLM upstream (Ollama and OpenAI APIs) on blast's
//! runtime (`crate::rt`).
//!
//! One pinned runtime thread per CPU, each with its own SO_REUSEPORT listener on the same port, so the
//! kernel spreads connections and the request path shares nothing but relaxed atomics.
//! Responses are pre-rendered where possible; with zero delays a whole stream is one write.
//!
//! - `config`: the command line, validated into a `MockConfig`.
//! - `server`: the threads and listeners, and each core's accept loop.
//! - `conn`: one connection: read, parse (`http`, `api`), answer; `conn::generate` paces a
//!   generation.
//! - `render`: response bytes, canned at start where possible.
//! - `stats`: per-core counters, `/metrics`, and the `--parallel` admission queue.

mod api;
mod config;
mod conn;
mod http;
mod render;
mod server;
mod stats;
#[cfg(test)]
mod tests;

pub use api::MAX_TOKENS;
pub use config::{MockArgs, MockConfig, MockError};
pub use server::MockServer;

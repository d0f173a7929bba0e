//! Byte-level rendering of responses. Everything that does not depend on the request is
//! rendered once at start (`Canned`); per-request pieces are appended to reusable buffers.

use std::time::SystemTime;

use super::api::{EmbedSpec, GenSpec};
use super::stats::{totals, CoreStats, Route};
use super::MockConfig;
use crate::llm::Api;

/// The generated text cycles through these; none needs JSON escaping.
pub(crate) const WORDS: [&str; 16] = [
    "The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog. ", "Pack ",
    "my ", "box ", "with ", "five ", "dozen ", "jugs. ",
];

pub(crate) const JSON: &str = "application/json; charset=utf-8";
pub(crate) const NDJSON: &str = "application/x-ndjson";
pub(crate) const SSE: &str = "text/event-stream";
const TEXT: &str = "text/plain; charset=utf-8";
const PROM: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Ollama's answer when its queue is full.
const BUSY_MSG: &str = "server busy, please try again.  maximum pending requests exceeded";
const INJECTED_MSG: &str = "mock: injected failure";
/// Ollama's `context` (token ids of prompt and answer) never exceeds its window (num_ctx).
const CONTEXT_MAX: u64 = 4096;

/// How the connection continues after a response; selects the `Connection` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnMode {
    /// HTTP/1.1 keep-alive: the default, no header needed.
    KeepAlive = 0,
    /// HTTP/1.0 keep-alive must be confirmed with `Connection: keep-alive`.
    KeepAlive10 = 1,
    Close = 2,
}

impl ConnMode {
    pub(crate) fn closes(self) -> bool {
        self == ConnMode::Close
    }
}

pub(crate) enum BodyLen {
    Fixed(usize),
    Chunked,
    /// Delimited by closing the connection (streams to HTTP/1.0 clients).
    UntilClose,
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

pub(crate) fn json_error(msg: &str) -> Vec<u8> {
    let mut v = b"{\"error\":".to_vec();
    push_json_str(&mut v, msg);
    v.push(b'}');
    v
}

/// OpenAI's error `type` for a status, picked as Ollama's OpenAI layer does.
fn oa_error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 | 431 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    }
}

/// An error body: Ollama's `{"error":"msg"}`, or OpenAI's
/// `{"error":{"message","type","param","code"}}` for the `/v1` routes.
pub(crate) fn error_body(openai: bool, status: u16, msg: &str) -> Vec<u8> {
    if !openai {
        return json_error(msg);
    }
    let mut v = b"{\"error\":{\"message\":".to_vec();
    push_json_str(&mut v, msg);
    v.extend_from_slice(b",\"type\":\"");
    v.extend_from_slice(oa_error_type(status).as_bytes());
    v.extend_from_slice(b"\",\"param\":null,\"code\":null}}");
    v
}

/// Ollama's message for a model it cannot run (generation, embeddings).
pub(crate) fn unknown_model_msg(model: &str) -> String {
    let quoted = serde_json::to_string(model).expect("a string serializes");
    format!("model {quoted} not found, try pulling it first")
}

pub(crate) fn push_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    len: BodyLen,
    mode: ConnMode,
    extra: &str,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    match len {
        BodyLen::Fixed(n) => {
            out.extend_from_slice(b"\r\nContent-Length: ");
            push_u64(out, n as u64);
        }
        BodyLen::Chunked => out.extend_from_slice(b"\r\nTransfer-Encoding: chunked"),
        BodyLen::UntilClose => {}
    }
    out.extend_from_slice(match mode {
        ConnMode::KeepAlive => b"\r\n".as_slice(),
        ConnMode::KeepAlive10 => b"\r\nConnection: keep-alive\r\n",
        ConnMode::Close => b"\r\nConnection: close\r\n",
    });
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A complete response with a fixed body; `head_only` answers HEAD.
pub(crate) fn push_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    mode: ConnMode,
    extra: &str,
    head_only: bool,
) {
    push_head(
        out,
        status,
        content_type,
        BodyLen::Fixed(body.len()),
        mode,
        extra,
    );
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends `payload` as one HTTP chunk (or raw, for close-delimited bodies).
pub(crate) fn push_chunk(out: &mut Vec<u8>, payload: &[u8], chunked: bool) {
    if chunked {
        push_hex(out, payload.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(payload);
    }
}

/// A response rendered for each `ConnMode`, remembering where its body starts (for HEAD).
pub(crate) struct Canned {
    full: [Box<[u8]>; 3],
    head_len: [usize; 3],
}

impl Canned {
    fn new(status: u16, content_type: &str, body: &[u8], extra: &str) -> Canned {
        let one = |mode| {
            let mut v = Vec::new();
            push_response(&mut v, status, content_type, body, mode, extra, false);
            let head = v.len() - body.len();
            (v.into_boxed_slice(), head)
        };
        let (a, ha) = one(ConnMode::KeepAlive);
        let (b, hb) = one(ConnMode::KeepAlive10);
        let (c, hc) = one(ConnMode::Close);
        Canned {
            full: [a, b, c],
            head_len: [ha, hb, hc],
        }
    }

    pub(crate) fn push(&self, out: &mut Vec<u8>, mode: ConnMode, head_only: bool) {
        let m = mode as usize;
        let bytes = &self.full[m];
        out.extend_from_slice(if head_only {
            &bytes[..self.head_len[m]]
        } else {
            bytes
        });
    }
}

/// An error rendered in both shapes: Ollama's, and OpenAI's for the `/v1` routes.
pub(crate) struct CannedErr([Canned; 2]);

impl CannedErr {
    fn new(status: u16, msg: &str, extra: &str) -> CannedErr {
        let one = |openai| Canned::new(status, JSON, &error_body(openai, status, msg), extra);
        CannedErr([one(false), one(true)])
    }

    pub(crate) fn get(&self, openai: bool) -> &Canned {
        &self.0[openai as usize]
    }
}

/// Every response that does not depend on the request, rendered once at start.
pub(crate) struct CannedSet {
    pub root: Canned,
    pub health: Canned,
    pub version: Canned,
    pub tags: Canned,
    pub ps: Canned,
    pub oa_models: Canned,
    pub not_found: Canned,
    pub get_only: CannedErr,
    pub post_only: CannedErr,
    pub injected: CannedErr,
    pub busy: CannedErr,
    pub model_required: CannedErr,
    pub missing_body: CannedErr,
}

pub(crate) const DEFAULT_MODELS: [&str; 3] = ["llama3.2:latest", "qwen2.5:0.5b", "mistral:latest"];

/// Ollama lists models with their tag; a bare name means `:latest`.
pub(crate) fn with_tag(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

pub(crate) fn model_names(cfg: &MockConfig) -> Vec<String> {
    match &cfg.models {
        Some(m) => m.iter().map(|n| with_tag(n)).collect(),
        None => DEFAULT_MODELS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Deterministic fake digest, so /api/tags is stable across runs.
fn digest(name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut out = String::with_capacity(64);
    for round in 0..4u64 {
        for b in name.bytes().chain(round.to_le_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

const MODIFIED_AT: &str = "2024-10-01T00:00:00.000000000Z";
const MODEL_SIZE: u64 = 2019393189;
/// The `created` of every OpenAI model object.
const MODEL_CREATED: u64 = 1727740800;

/// Ollama's `details` of a model, its family guessed from the name.
fn details(name: &str) -> serde_json::Value {
    let base = name.split(':').next().unwrap_or(name);
    let family = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let family = if family.is_empty() { base } else { family };
    serde_json::json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M"
    })
}

fn tags_body(names: &[String]) -> Vec<u8> {
    let models: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n,
                "model": n,
                "modified_at": MODIFIED_AT,
                "size": MODEL_SIZE,
                "digest": digest(n),
                "details": details(n),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "models": models })).expect("json")
}

/// `/api/ps`: every known model, loaded in VRAM and never expiring.
fn ps_body(names: &[String]) -> Vec<u8> {
    let models: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n,
                "model": n,
                "size": MODEL_SIZE,
                "digest": digest(n),
                "details": details(n),
                "expires_at": "2099-01-01T00:00:00Z",
                "size_vram": MODEL_SIZE,
                "context_length": CONTEXT_MAX,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "models": models })).expect("json")
}

/// `/api/show` of a model.
pub(crate) fn show_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "license": "",
        "modelfile": format!("# Modelfile generated by \"ollama show\"\nFROM {name}\n"),
        "parameters": format!("num_ctx {CONTEXT_MAX}"),
        "template": "{{ .Prompt }}",
        "details": details(name),
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 3212749888u64,
            "llama.context_length": CONTEXT_MAX,
            "llama.embedding_length": super::api::EMBED_DIM,
        },
        "capabilities": ["completion"],
        "modified_at": MODIFIED_AT,
    }))
    .expect("json")
}

/// `/v1/models/{id}`.
pub(crate) fn oa_model_body(id: &str) -> Vec<u8> {
    let m = serde_json::json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": "library"});
    serde_json::to_vec(&m).expect("json")
}

/// A deterministic unit vector of `dims` floats for `text`: the same input and seed give
/// the same vector.
pub(crate) fn embedding(seed: u64, text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325 ^ seed;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut rng = crate::rng::SplitMix64::from_state(h);
    let mut v: Vec<f32> = (0..dims).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The body of an embedding answer, in the shape of its route.
pub(crate) fn embed_body(route: Route, spec: &EmbedSpec, seed: u64, took_ns: u64) -> Vec<u8> {
    use base64::Engine;
    let vecs = spec.inputs.iter().map(|t| embedding(seed, t, spec.dims));
    let body = match route {
        Route::Embeddings => {
            let v = vecs.into_iter().next().unwrap_or_default();
            serde_json::json!({ "embedding": v })
        }
        Route::Embed => serde_json::json!({
            "model": spec.model,
            "embeddings": vecs.collect::<Vec<_>>(),
            "total_duration": took_ns,
            "load_duration": 0,
            "prompt_eval_count": spec.prompt_tokens,
        }),
        _ => {
            let data: Vec<serde_json::Value> = vecs
                .enumerate()
                .map(|(i, v)| {
                    let e = if spec.base64 {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        serde_json::Value::from(
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                        )
                    } else {
                        serde_json::Value::from(v)
                    };
                    serde_json::json!({"object": "embedding", "embedding": e, "index": i})
                })
                .collect();
            serde_json::json!({
                "object": "list",
                "data": data,
                "model": spec.model,
                "usage": {"prompt_tokens": spec.prompt_tokens, "total_tokens": spec.prompt_tokens},
            })
        }
    };
    serde_json::to_vec(&body).expect("json")
}

fn oa_models_body(names: &[String]) -> Vec<u8> {
    let data: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"id": n, "object": "model", "created": MODEL_CREATED, "owned_by": "library"}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).expect("json")
}

impl CannedSet {
    pub(crate) fn build(cfg: &MockConfig) -> CannedSet {
        let names = model_names(cfg);
        CannedSet {
            root: Canned::new(200, TEXT, b"Ollama is running", ""),
            // vLLM answers its health check with an empty 200.
            health: Canned::new(200, TEXT, b"", ""),
            version: Canned::new(200, JSON, br#"{"version":"0.0.0-blast-mock"}"#, ""),
            tags: Canned::new(200, JSON, &tags_body(&names), ""),
            ps: Canned::new(200, JSON, &ps_body(&names), ""),
            oa_models: Canned::new(200, JSON, &oa_models_body(&names), ""),
            not_found: Canned::new(404, TEXT, b"404 page not found", ""),
            get_only: CannedErr::new(405, "method not allowed", "Allow: GET, HEAD\r\n"),
            post_only: CannedErr::new(405, "method not allowed", "Allow: POST\r\n"),
            injected: CannedErr::new(500, INJECTED_MSG, ""),
            busy: CannedErr::new(503, BUSY_MSG, ""),
            model_required: CannedErr::new(400, "model is required", ""),
            missing_body: CannedErr::new(400, "missing request body", ""),
        }
    }
}

pub(crate) fn metrics_body(cores: &[CoreStats]) -> Vec<u8> {
    use std::fmt::Write;
    let t = totals(cores);
    let mut s = String::with_capacity(1024);
    s.push_str("# HELP mock_requests_total Requests answered, by path and status.\n");
    s.push_str("# TYPE mock_requests_total counter\n");
    for (route, status, n) in &t.requests {
        let _ = writeln!(
            s,
            "mock_requests_total{{path=\"{}\",status=\"{status}\"}} {n}",
            route.label()
        );
    }
    let _ = write!(
        s,
        "# HELP mock_in_flight Generation requests producing tokens now.\n\
         # TYPE mock_in_flight gauge\n\
         mock_in_flight {}\n\
         # HELP mock_queue_depth Generation requests waiting for a --parallel slot.\n\
         # TYPE mock_queue_depth gauge\n\
         mock_queue_depth {}\n\
         # HELP mock_tokens_total Tokens generated.\n\
         # TYPE mock_tokens_total counter\n\
         mock_tokens_total {}\n",
        t.in_flight, t.waiting, t.tokens
    );
    s.into_bytes()
}

pub(crate) fn push_metrics(
    out: &mut Vec<u8>,
    cores: &[CoreStats],
    mode: ConnMode,
    head_only: bool,
) {
    push_response(out, 200, PROM, &metrics_body(cores), mode, "", head_only);
}

/// Per-request identity stamped on every chunk.
pub(crate) struct Stamp {
    /// Ollama `created_at` (RFC 3339, nanoseconds).
    pub created_at: String,
    /// OpenAI `created` (Unix seconds).
    pub created: u64,
    /// OpenAI `id`.
    pub id: String,
    /// The model name as a JSON string, escaped once for every chunk.
    pub model_json: Vec<u8>,
}

/// Ollama's `created_at` for now (RFC 3339, nanoseconds); OpenAI objects carry none.
pub(crate) fn created_at(api: Api) -> String {
    if api.is_ollama() {
        humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
    } else {
        String::new()
    }
}

pub(crate) fn json_str(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    push_json_str(&mut v, s);
    v
}

/// Nanosecond durations of the final Ollama object; they add up to `total`.
pub(crate) struct Timings {
    pub total: u64,
    pub load: u64,
    pub prompt_eval: u64,
    pub eval: u64,
}

/// Common prefix of every OpenAI object: `{"id":..,"object":..,"created":..,"model":..,`
fn oa_prefix(v: &mut Vec<u8>, stamp: &Stamp, object: &str) {
    v.extend_from_slice(b"{\"id\":");
    push_json_str(v, &stamp.id);
    v.extend_from_slice(b",\"object\":\"");
    v.extend_from_slice(object.as_bytes());
    v.extend_from_slice(b"\",\"created\":");
    push_u64(v, stamp.created);
    v.extend_from_slice(b",\"model\":");
    v.extend_from_slice(&stamp.model_json);
    v.push(b',');
}

/// Appends `{"model":..,"created_at":"..",`; returns where `created_at`'s text starts.
fn ollama_prefix(v: &mut Vec<u8>, stamp: &Stamp, created_at: &str) -> usize {
    v.extend_from_slice(b"{\"model\":");
    v.extend_from_slice(&stamp.model_json);
    v.extend_from_slice(b",\"created_at\":\"");
    let at = v.len();
    v.extend_from_slice(created_at.as_bytes());
    v.extend_from_slice(b"\",");
    at
}

/// Ollama's `context`: fake token ids of prompt and answer, the most recent `CONTEXT_MAX`.
fn push_context(v: &mut Vec<u8>, spec: &GenSpec) {
    let n = (spec.prompt_tokens + spec.tokens as u64).min(CONTEXT_MAX);
    v.extend_from_slice(b"\"context\":[");
    for i in 0..n {
        if i > 0 {
            v.push(b',');
        }
        push_u64(v, 1 + i % WORDS.len() as u64);
    }
    v.extend_from_slice(b"],");
}

fn chunk_object(spec: &GenSpec) -> &'static str {
    match spec.api {
        Api::OpenaiChat => "chat.completion.chunk",
        _ => "text_completion",
    }
}

/// Renders the framed chunk of each word the request will use into `tok`, word i being
/// `tok[offs[i]..offs[i + 1]]`, so a token costs one copy. For OpenAI chat the role-only
/// first chunk goes first, as `tok[..offs[0]]`. For Ollama, `ts[i]` is where word i's
/// `created_at` text lies in `tok`, so each copy can be stamped with the current time.
pub(crate) fn render_tokens(
    tok: &mut Vec<u8>,
    offs: &mut Vec<usize>,
    ts: &mut Vec<usize>,
    scratch: &mut Vec<u8>,
    spec: &GenSpec,
    stamp: &Stamp,
    chunked: bool,
) {
    tok.clear();
    offs.clear();
    ts.clear();
    // OpenAI sends `"usage":null` on every chunk before the usage one.
    let tail: &[u8] = if spec.include_usage {
        b"\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    } else {
        b"\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    };
    let mut one = |tok: &mut Vec<u8>, word: Option<&str>| {
        let v = &mut *scratch;
        v.clear();
        let mut stamp_at = None;
        match spec.api {
            Api::OllamaGenerate => {
                stamp_at = Some(ollama_prefix(v, stamp, &stamp.created_at));
                v.extend_from_slice(b"\"response\":\"");
                v.extend_from_slice(word.unwrap_or("").as_bytes());
                v.extend_from_slice(b"\",\"done\":false}\n");
            }
            Api::OllamaChat => {
                stamp_at = Some(ollama_prefix(v, stamp, &stamp.created_at));
                v.extend_from_slice(b"\"message\":{\"role\":\"assistant\",\"content\":\"");
                v.extend_from_slice(word.unwrap_or("").as_bytes());
                v.extend_from_slice(b"\"},\"done\":false}\n");
            }
            Api::OpenaiChat => {
                v.extend_from_slice(b"data: ");
                oa_prefix(v, stamp, chunk_object(spec));
                v.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{");
                match word {
                    Some(w) => {
                        v.extend_from_slice(b"\"content\":\"");
                        v.extend_from_slice(w.as_bytes());
                    }
                    None => v.extend_from_slice(b"\"role\":\"assistant\",\"content\":\""),
                }
                v.extend_from_slice(b"\"},");
                v.extend_from_slice(tail);
            }
            Api::OpenaiCompletions => {
                v.extend_from_slice(b"data: ");
                oa_prefix(v, stamp, chunk_object(spec));
                v.extend_from_slice(b"\"choices\":[{\"index\":0,\"text\":\"");
                v.extend_from_slice(word.unwrap_or("").as_bytes());
                v.extend_from_slice(b"\",");
                v.extend_from_slice(tail);
            }
        }
        let start = tok.len();
        push_chunk(tok, v, chunked);
        if let Some(at) = stamp_at {
            // The payload ends the chunk, before its CRLF when chunked.
            let payload_at = tok.len() - v.len() - if chunked { 2 } else { 0 };
            debug_assert!(payload_at >= start);
            ts.push(payload_at + at);
        }
    };
    if spec.api == Api::OpenaiChat {
        one(tok, None);
    }
    offs.push(tok.len());
    for w in WORDS.iter().take(spec.tokens as usize) {
        one(tok, Some(w));
        offs.push(tok.len());
    }
}

fn push_ollama_stats(v: &mut Vec<u8>, spec: &GenSpec, t: &Timings) {
    v.extend_from_slice(b"\"done_reason\":\"");
    v.extend_from_slice(spec.reason().as_bytes());
    v.extend_from_slice(b"\",\"done\":true,\"total_duration\":");
    push_u64(v, t.total);
    v.extend_from_slice(b",\"load_duration\":");
    push_u64(v, t.load);
    v.extend_from_slice(b",\"prompt_eval_count\":");
    push_u64(v, spec.prompt_tokens);
    v.extend_from_slice(b",\"prompt_eval_duration\":");
    push_u64(v, t.prompt_eval);
    v.extend_from_slice(b",\"eval_count\":");
    push_u64(v, spec.tokens as u64);
    v.extend_from_slice(b",\"eval_duration\":");
    push_u64(v, t.eval);
    v.push(b'}');
}

fn push_usage(v: &mut Vec<u8>, spec: &GenSpec) {
    v.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
    push_u64(v, spec.prompt_tokens);
    v.extend_from_slice(b",\"completion_tokens\":");
    push_u64(v, spec.tokens as u64);
    v.extend_from_slice(b",\"total_tokens\":");
    push_u64(v, spec.prompt_tokens + spec.tokens as u64);
    v.push(b'}');
}

fn push_text(v: &mut Vec<u8>, n: u32) {
    for i in 0..n as usize {
        v.extend_from_slice(WORDS[i % WORDS.len()].as_bytes());
    }
}

/// Appends everything a stream sends after its last token, terminator included.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_stream_end(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    spec: &GenSpec,
    stamp: &Stamp,
    end_created_at: &str,
    t: &Timings,
    chunked: bool,
    no_done: bool,
) {
    let v = scratch;
    v.clear();
    match spec.api {
        Api::OllamaGenerate => {
            ollama_prefix(v, stamp, end_created_at);
            v.extend_from_slice(b"\"response\":\"\",");
            push_context(v, spec);
            push_ollama_stats(v, spec, t);
            v.push(b'\n');
            push_chunk(out, v, chunked);
        }
        Api::OllamaChat => {
            ollama_prefix(v, stamp, end_created_at);
            v.extend_from_slice(b"\"message\":{\"role\":\"assistant\",\"content\":\"\"},");
            push_ollama_stats(v, spec, t);
            v.push(b'\n');
            push_chunk(out, v, chunked);
        }
        Api::OpenaiChat | Api::OpenaiCompletions => {
            v.extend_from_slice(b"data: ");
            oa_prefix(v, stamp, chunk_object(spec));
            if spec.api == Api::OpenaiChat {
                v.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{},");
            } else {
                v.extend_from_slice(b"\"choices\":[{\"index\":0,\"text\":\"\",");
            }
            v.extend_from_slice(b"\"logprobs\":null,\"finish_reason\":\"");
            v.extend_from_slice(spec.reason().as_bytes());
            if spec.include_usage {
                v.extend_from_slice(b"\"}],\"usage\":null}\n\n");
            } else {
                v.extend_from_slice(b"\"}]}\n\n");
            }
            push_chunk(out, v, chunked);
            if spec.include_usage {
                v.clear();
                v.extend_from_slice(b"data: ");
                oa_prefix(v, stamp, chunk_object(spec));
                v.extend_from_slice(b"\"choices\":[],");
                push_usage(v, spec);
                v.extend_from_slice(b"}\n\n");
                push_chunk(out, v, chunked);
            }
            if !no_done {
                push_chunk(out, b"data: [DONE]\n\n", chunked);
            }
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// The whole body of a non-streaming answer.
pub(crate) fn render_full(
    v: &mut Vec<u8>,
    spec: &GenSpec,
    stamp: &Stamp,
    end_created_at: &str,
    t: &Timings,
) {
    v.clear();
    match spec.api {
        Api::OllamaGenerate => {
            ollama_prefix(v, stamp, end_created_at);
            v.extend_from_slice(b"\"response\":\"");
            push_text(v, spec.tokens);
            v.extend_from_slice(b"\",");
            push_context(v, spec);
            push_ollama_stats(v, spec, t);
        }
        Api::OllamaChat => {
            ollama_prefix(v, stamp, end_created_at);
            v.extend_from_slice(b"\"message\":{\"role\":\"assistant\",\"content\":\"");
            push_text(v, spec.tokens);
            v.extend_from_slice(b"\"},");
            push_ollama_stats(v, spec, t);
        }
        Api::OpenaiChat => {
            oa_prefix(v, stamp, "chat.completion");
            v.extend_from_slice(
                b"\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
            );
            push_text(v, spec.tokens);
            v.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":\"");
            v.extend_from_slice(spec.reason().as_bytes());
            v.extend_from_slice(b"\"}],");
            push_usage(v, spec);
            v.push(b'}');
        }
        Api::OpenaiCompletions => {
            oa_prefix(v, stamp, "text_completion");
            v.extend_from_slice(b"\"choices\":[{\"index\":0,\"text\":\"");
            push_text(v, spec.tokens);
            v.extend_from_slice(b"\",\"logprobs\":null,\"finish_reason\":\"");
            v.extend_from_slice(spec.reason().as_bytes());
            v.extend_from_slice(b"\"}],");
            push_usage(v, spec);
            v.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(api: Api) -> GenSpec {
        GenSpec {
            api,
            model: "m\"x".into(),
            stream: true,
            tokens: 3,
            limited: false,
            prompt_tokens: 7,
            include_usage: true,
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            created_at: "2024-01-01T00:00:00.000000000Z".into(),
            created: 1,
            id: "chatcmpl-1".into(),
            model_json: json_str("m\"x"),
        }
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, u64::MAX);
        v.push(b' ');
        push_hex(&mut v, 0x1a2b);
        assert_eq!(v, b"0 18446744073709551615 1a2b");
    }

    #[test]
    fn json_strings_round_trip() {
        let s = "q\"b\\n\n\u{1}\u{7f}é";
        let v: String = serde_json::from_slice(&json_str(s)).unwrap();
        assert_eq!(v, s);
        let e: serde_json::Value = serde_json::from_slice(&json_error(s)).unwrap();
        assert_eq!(e["error"], s);
    }

    #[test]
    fn every_rendered_token_is_valid_json() {
        for api in Api::ALL {
            let (mut tok, mut offs, mut ts, mut scratch) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            render_tokens(
                &mut tok,
                &mut offs,
                &mut ts,
                &mut scratch,
                &spec(api),
                &stamp(),
                false,
            );
            for w in offs.windows(2) {
                let s = std::str::from_utf8(&tok[w[0]..w[1]]).unwrap();
                let s = s.strip_prefix("data: ").unwrap_or(s).trim_end();
                let v: serde_json::Value = serde_json::from_str(s).unwrap();
                assert_eq!(v["model"], "m\"x");
                if !api.is_ollama() {
                    assert!(v["usage"].is_null() && v.get("usage").is_some(), "{s}");
                }
            }
            // Each Ollama chunk's `created_at` is where `ts` says.
            for &at in &ts {
                assert_eq!(&tok[at..at + 30], stamp().created_at.as_bytes());
            }
            assert_eq!(ts.len(), if api.is_ollama() { 3 } else { 0 });
            let t = Timings {
                total: 4,
                load: 1,
                prompt_eval: 1,
                eval: 2,
            };
            render_full(&mut scratch, &spec(api), &stamp(), "now", &t);
            let _: serde_json::Value = serde_json::from_slice(&scratch).unwrap();
        }
    }
}

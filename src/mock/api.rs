//! Generation request bodies (Ollama and OpenAI), reduced to a `GenSpec`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::llm::Api;

/// Longest answer (per request and for --tokens): a non-streaming body is built in
/// memory, so its size must stay bounded.
pub const MAX_TOKENS: u32 = 1 << 20;

/// What a generation request asked for, owned so the read buffer can move on.
#[derive(Debug)]
pub(crate) struct GenSpec {
    pub api: Api,
    pub model: String,
    pub stream: bool,
    pub tokens: u32,
    /// The request capped the length (num_predict / max_tokens): finish reason "length".
    pub limited: bool,
    pub prompt_tokens: u64,
    pub include_usage: bool,
}

impl GenSpec {
    /// Ollama's `done_reason`, OpenAI's `finish_reason`.
    pub(crate) fn reason(&self) -> &'static str {
        if self.limited {
            "length"
        } else {
            "stop"
        }
    }
}

/// Total length of every string inside a JSON value: an estimate of the prompt size
/// whatever shape `prompt` / `messages` take (string, array, content parts...).
#[derive(Default)]
struct TextLen(u64);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TextLen, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextLen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TextLen, E> {
                Ok(TextLen(s.len() as u64))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TextLen, E> {
                Ok(TextLen(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextLen, A::Error> {
                let mut n = 0;
                while let Some(TextLen(x)) = seq.next_element()? {
                    n += x;
                }
                Ok(TextLen(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextLen, A::Error> {
                let mut n = 0;
                while let Some((IgnoredAny, TextLen(x))) = map.next_entry()? {
                    n += x;
                }
                Ok(TextLen(n))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
struct Options {
    num_predict: Option<i64>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    options: Option<Options>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    prompt: TextLen,
    #[serde(default)]
    messages: TextLen,
    #[serde(default)]
    system: TextLen,
}

/// Why a generation request is refused before generating.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    MissingBody,
    BadJson(String),
    ModelRequired,
    UnknownModel(String),
}

/// Ollama resolves a bare name to `:latest`, so `llama3.2` and `llama3.2:latest` match.
pub(crate) fn model_known(models: &[String], name: &str) -> bool {
    let bare = |s: &str| {
        s.strip_suffix(":latest")
            .map(str::to_string)
            .unwrap_or(s.into())
    };
    let name = bare(name);
    models.iter().any(|m| bare(m) == name)
}

/// The named model, if it is one the server knows.
fn known_model(model: Option<Cow<str>>, models: Option<&[String]>) -> Result<String, Reject> {
    let model = match model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(Reject::ModelRequired),
    };
    match models {
        Some(models) if !model_known(models, &model) => Err(Reject::UnknownModel(model)),
        _ => Ok(model),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reject::MissingBody);
    }
    serde_json::from_slice(body).map_err(|e| Reject::BadJson(e.to_string()))
}

pub(crate) fn parse_gen(
    api: Api,
    body: &[u8],
    default_tokens: u32,
    models: Option<&[String]>,
) -> Result<GenSpec, Reject> {
    let b: Body = parse_json(body)?;
    let model = known_model(b.model, models)?;
    let limit = if api.is_ollama() {
        b.options.and_then(|o| o.num_predict)
    } else {
        b.max_completion_tokens.or(b.max_tokens)
    };
    // Ollama's negative num_predict means "no limit": fall back to --tokens.
    let (tokens, limited) = match limit {
        Some(n) if n >= 0 => (n.min(MAX_TOKENS as i64) as u32, true),
        _ => (default_tokens, false),
    };
    let text = b.prompt.0 + b.messages.0 + b.system.0;
    Ok(GenSpec {
        api,
        model,
        // Ollama streams unless told not to; OpenAI only when asked.
        stream: b.stream.unwrap_or(api.is_ollama()),
        tokens,
        limited,
        prompt_tokens: text.div_ceil(4).max(1),
        include_usage: b.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// `/api/show`: the model (`model`, or the older `name`).
#[derive(Deserialize)]
struct ShowBody<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

pub(crate) fn parse_show(body: &[u8], models: Option<&[String]>) -> Result<String, Reject> {
    let b: ShowBody = parse_json(body)?;
    known_model(b.model.or(b.name), models)
}

/// The inputs an embedding request may carry: text, texts, or token ids (OpenAI).
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

#[derive(Deserialize)]
struct EmbedBody<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    input: Option<Input>,
    /// `/api/embeddings` takes one `prompt`.
    prompt: Option<String>,
    dimensions: Option<u32>,
    encoding_format: Option<String>,
}

/// Default length of a mock embedding: small, so large batches stay cheap.
pub(crate) const EMBED_DIM: usize = 32;
/// Largest `dimensions` a request may ask for.
pub(crate) const MAX_EMBED_DIM: u32 = 4096;

/// An embedding request: one vector per input.
#[derive(Debug)]
pub(crate) struct EmbedSpec {
    pub model: String,
    pub inputs: Vec<String>,
    pub dims: usize,
    /// OpenAI `encoding_format: "base64"`: little-endian f32s, base64-encoded.
    pub base64: bool,
    pub prompt_tokens: u64,
}

pub(crate) fn parse_embed(body: &[u8], models: Option<&[String]>) -> Result<EmbedSpec, Reject> {
    let b: EmbedBody = parse_json(body)?;
    let model = known_model(b.model, models)?;
    let ids = |v: &[i64]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let inputs = match (b.input, b.prompt) {
        (Some(Input::One(s)), _) | (None, Some(s)) => vec![s],
        (Some(Input::Many(v)), _) => v,
        (Some(Input::Ids(v)), _) => vec![ids(&v)],
        (Some(Input::IdLists(v)), _) => v.iter().map(|l| ids(l)).collect(),
        (None, None) => Vec::new(),
    };
    let dims = match b.dimensions {
        Some(d) if (1..=MAX_EMBED_DIM).contains(&d) => d as usize,
        Some(d) => {
            return Err(Reject::BadJson(format!(
                "dimensions {d}: want 1 to {MAX_EMBED_DIM}"
            )))
        }
        None => EMBED_DIM,
    };
    let text: u64 = inputs.iter().map(|s| s.len() as u64).sum();
    Ok(EmbedSpec {
        model,
        dims,
        base64: b.encoding_format.as_deref() == Some("base64"),
        prompt_tokens: text.div_ceil(4).max(inputs.len() as u64),
        inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_dialects() {
        let s = parse_gen(
            Api::OllamaGenerate,
            br#"{"model":"llama3.2","prompt":"12345678","options":{"num_predict":5,"temperature":0.1}}"#,
            32,
            None,
        )
        .unwrap();
        assert_eq!(
            (s.tokens, s.limited, s.stream, s.prompt_tokens),
            (5, true, true, 2)
        );
        let s = parse_gen(
            Api::OpenaiChat,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stream":true,"stream_options":{"include_usage":true},"max_tokens":null}"#,
            32,
            None,
        )
        .unwrap();
        assert_eq!(
            (s.tokens, s.limited, s.stream, s.include_usage),
            (32, false, true, true)
        );
        let s = parse_gen(
            Api::OpenaiCompletions,
            br#"{"model":"m","prompt":["a","b"]}"#,
            3,
            None,
        )
        .unwrap();
        assert!(!s.stream);
        let s = parse_gen(
            Api::OllamaChat,
            br#"{"model":"m","options":{"num_predict":-1}}"#,
            7,
            None,
        )
        .unwrap();
        assert_eq!((s.tokens, s.limited), (7, false));
    }

    #[test]
    fn rejects() {
        let models = ["llama3.2".to_string(), "qwen:7b".to_string()];
        let p =
            |b: &str| parse_gen(Api::OllamaChat, b.as_bytes(), 1, Some(&models)).map(|s| s.model);
        assert_eq!(p(""), Err(Reject::MissingBody));
        assert!(matches!(p("{"), Err(Reject::BadJson(_))));
        assert!(matches!(
            p(r#"{"model":"x","stream":"yes"}"#),
            Err(Reject::BadJson(_))
        ));
        assert_eq!(p(r#"{"prompt":"x"}"#), Err(Reject::ModelRequired));
        assert_eq!(p(r#"{"model":"x"}"#), Err(Reject::UnknownModel("x".into())));
        assert_eq!(
            p(r#"{"model":"llama3.2:latest"}"#),
            Ok("llama3.2:latest".into())
        );
        assert_eq!(p(r#"{"model":"qwen:7b"}"#), Ok("qwen:7b".into()));
        assert!(p(r#"{"model":"qwen"}"#).is_err());
    }

    #[test]
    fn show_and_embed_bodies() {
        let models = ["llama3.2".to_string()];
        assert_eq!(
            parse_show(br#"{"name":"llama3.2"}"#, Some(&models)),
            Ok("llama3.2".into())
        );
        assert_eq!(
            parse_show(br#"{"model":"x"}"#, Some(&models)),
            Err(Reject::UnknownModel("x".into()))
        );
        let e = parse_embed(br#"{"model":"m","input":["a","bcd"]}"#, None).unwrap();
        assert_eq!((e.inputs.len(), e.dims, e.base64), (2, EMBED_DIM, false));
        let e = parse_embed(br#"{"model":"m","prompt":"hello"}"#, None).unwrap();
        assert_eq!(e.inputs, ["hello"]);
        let e = parse_embed(
            br#"{"model":"m","input":[[1,2],[3]],"encoding_format":"base64","dimensions":8}"#,
            None,
        )
        .unwrap();
        assert_eq!((e.inputs.len(), e.dims, e.base64), (2, 8, true));
        assert!(parse_embed(br#"{"model":"m","input":"x","dimensions":0}"#, None).is_err());
        assert_eq!(
            parse_embed(b" ", None).map(|e| e.model),
            Err(Reject::MissingBody)
        );
    }
}

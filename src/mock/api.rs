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
fn model_known(models: &[String], name: &str) -> bool {
    let bare = |s: &str| {
        s.strip_suffix(":latest")
            .map(str::to_string)
            .unwrap_or(s.into())
    };
    let name = bare(name);
    models.iter().any(|m| bare(m) == name)
}

pub(crate) fn parse_gen(
    api: Api,
    body: &[u8],
    default_tokens: u32,
    models: Option<&[String]>,
) -> Result<GenSpec, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reject::MissingBody);
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| Reject::BadJson(e.to_string()))?;
    let model = match b.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(Reject::ModelRequired),
    };
    if let Some(models) = models {
        if !model_known(models, &model) {
            return Err(Reject::UnknownModel(model));
        }
    }
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
}

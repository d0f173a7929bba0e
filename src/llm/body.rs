//! Request bodies for each API, rendered once per prompt by the engine.

use serde::Serialize;

use super::Api;

#[derive(Clone, Copy, Debug)]
pub struct BodySpec<'a> {
    pub api: Api,
    pub model: &'a str,
    pub prompt: &'a str,
    pub stream: bool,
    pub max_tokens: Option<u32>,
    /// OpenAI only, and only when streaming: ask for the final usage chunk.
    pub include_usage: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct OllamaOptions {
    num_predict: u32,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OllamaGenerate<'a> {
    model: &'a str,
    prompt: &'a str,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<OllamaOptions>,
}

#[derive(Serialize)]
struct OllamaChat<'a> {
    model: &'a str,
    messages: [Message<'a>; 1],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<OllamaOptions>,
}

#[derive(Serialize)]
struct OpenaiChat<'a> {
    model: &'a str,
    messages: [Message<'a>; 1],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct OpenaiCompletions<'a> {
    model: &'a str,
    prompt: &'a str,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// Renders the JSON request body for `spec`.
pub fn render(spec: &BodySpec) -> Vec<u8> {
    let mut out = Vec::with_capacity(spec.prompt.len() + spec.model.len() + 128);
    render_into(spec, &mut out);
    out
}

/// Appends the JSON request body for `spec` to `out`.
pub fn render_into(spec: &BodySpec, out: &mut Vec<u8>) {
    let options = spec.max_tokens.map(|n| OllamaOptions { num_predict: n });
    // Servers reject stream_options on non-streaming requests (OpenAI does), so
    // it is sent only when it can have an effect.
    let stream_options = (spec.stream && spec.include_usage).then_some(StreamOptions {
        include_usage: true,
    });
    let messages = [Message {
        role: "user",
        content: spec.prompt,
    }];
    let res = match spec.api {
        Api::OllamaGenerate => serde_json::to_writer(
            &mut *out,
            &OllamaGenerate {
                model: spec.model,
                prompt: spec.prompt,
                stream: spec.stream,
                options,
            },
        ),
        Api::OllamaChat => serde_json::to_writer(
            &mut *out,
            &OllamaChat {
                model: spec.model,
                messages,
                stream: spec.stream,
                options,
            },
        ),
        Api::OpenaiChat => serde_json::to_writer(
            &mut *out,
            &OpenaiChat {
                model: spec.model,
                messages,
                stream: spec.stream,
                max_tokens: spec.max_tokens,
                stream_options,
            },
        ),
        Api::OpenaiCompletions => serde_json::to_writer(
            &mut *out,
            &OpenaiCompletions {
                model: spec.model,
                prompt: spec.prompt,
                stream: spec.stream,
                max_tokens: spec.max_tokens,
                stream_options,
            },
        ),
    };
    // Plain structs of strings, bools and integers written to a Vec cannot fail.
    res.expect("serialising a request body into a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn spec(
        api: Api,
        stream: bool,
        max_tokens: Option<u32>,
        include_usage: bool,
    ) -> BodySpec<'static> {
        BodySpec {
            api,
            model: "llama3.2:1b",
            prompt: "Why is the sky blue?",
            stream,
            max_tokens,
            include_usage,
        }
    }

    fn parsed(s: &BodySpec) -> Value {
        serde_json::from_slice(&render(s)).expect("valid JSON")
    }

    #[test]
    fn ollama_generate() {
        let v = parsed(&spec(Api::OllamaGenerate, true, Some(64), true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b","prompt":"Why is the sky blue?","stream":true,
                   "options":{"num_predict":64}})
        );
        let v = parsed(&spec(Api::OllamaGenerate, false, None, true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b","prompt":"Why is the sky blue?","stream":false})
        );
    }

    #[test]
    fn ollama_chat() {
        let v = parsed(&spec(Api::OllamaChat, true, Some(32), false));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b",
                   "messages":[{"role":"user","content":"Why is the sky blue?"}],
                   "stream":true,"options":{"num_predict":32}})
        );
        let v = parsed(&spec(Api::OllamaChat, false, None, false));
        assert!(v.get("options").is_none());
        assert_eq!(v["stream"], json!(false));
    }

    #[test]
    fn openai_chat() {
        let v = parsed(&spec(Api::OpenaiChat, true, Some(128), true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b",
                   "messages":[{"role":"user","content":"Why is the sky blue?"}],
                   "stream":true,"max_tokens":128,
                   "stream_options":{"include_usage":true}})
        );
        // No stream_options when not streaming or not asked for; no max_tokens when unset.
        let v = parsed(&spec(Api::OpenaiChat, false, None, true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b",
                   "messages":[{"role":"user","content":"Why is the sky blue?"}],
                   "stream":false})
        );
        let v = parsed(&spec(Api::OpenaiChat, true, None, false));
        assert!(v.get("stream_options").is_none());
        assert!(v.get("max_tokens").is_none());
    }

    #[test]
    fn openai_completions() {
        let v = parsed(&spec(Api::OpenaiCompletions, true, Some(16), true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b","prompt":"Why is the sky blue?","stream":true,
                   "max_tokens":16,"stream_options":{"include_usage":true}})
        );
        let v = parsed(&spec(Api::OpenaiCompletions, false, Some(16), true));
        assert_eq!(
            v,
            json!({"model":"llama3.2:1b","prompt":"Why is the sky blue?","stream":false,
                   "max_tokens":16})
        );
    }

    #[test]
    fn escaping() {
        let prompt = "Line one\nline \"two\"\t\\ caf\u{e9} \u{1}";
        for api in Api::ALL {
            let s = BodySpec {
                api,
                model: "m\"odel",
                prompt,
                stream: true,
                max_tokens: None,
                include_usage: false,
            };
            let bytes = render(&s);
            assert!(!bytes.contains(&b'\n'), "raw newline in {api} body");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["model"], json!("m\"odel"));
            let got = if api.is_chat() {
                &v["messages"][0]["content"]
            } else {
                &v["prompt"]
            };
            assert_eq!(got, &json!(prompt));
        }
    }

    #[test]
    fn render_into_appends() {
        let s = spec(Api::OpenaiChat, true, None, true);
        let mut out = b"prefix".to_vec();
        render_into(&s, &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &render(&s)[..]);
    }
}

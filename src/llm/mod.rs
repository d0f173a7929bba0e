//! Request bodies, prompt sets and streamed-response decoding for the LLM
//! server APIs blast can drive. Pure code: no I/O, no clock reads.

pub mod body;
pub mod prompts;
pub mod slo;
pub mod stream;

pub use body::{render, render_into, BodySpec};
pub use prompts::{load_prompt_file, PromptError, PromptMix, PromptSet};
pub use stream::{
    DoneReason, FinalInfo, StreamDecoder, StreamEnd, StreamError, StreamObserver, MAX_EVENT_LEN,
};

/// The wire protocol spoken to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    OllamaGenerate,
    OllamaChat,
    OpenaiChat,
    OpenaiCompletions,
}

impl Api {
    pub const ALL: [Api; 4] = [
        Api::OllamaGenerate,
        Api::OllamaChat,
        Api::OpenaiChat,
        Api::OpenaiCompletions,
    ];

    pub fn parse(s: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::OllamaGenerate => "ollama-generate",
            Api::OllamaChat => "ollama-chat",
            Api::OpenaiChat => "openai-chat",
            Api::OpenaiCompletions => "openai-completions",
        }
    }

    pub fn default_path(self) -> &'static str {
        match self {
            Api::OllamaGenerate => "/api/generate",
            Api::OllamaChat => "/api/chat",
            Api::OpenaiChat => "/v1/chat/completions",
            Api::OpenaiCompletions => "/v1/completions",
        }
    }

    /// Ollama streams NDJSON; the OpenAI-compatible APIs stream SSE.
    pub fn is_ollama(self) -> bool {
        matches!(self, Api::OllamaGenerate | Api::OllamaChat)
    }

    /// Whether the request carries a `messages` array rather than a `prompt`.
    pub fn is_chat(self) -> bool {
        matches!(self, Api::OllamaChat | Api::OpenaiChat)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_name_roundtrip() {
        for api in Api::ALL {
            assert_eq!(Api::parse(api.name()), Some(api));
            assert_eq!(api.to_string(), api.name());
        }
        assert_eq!(Api::parse("openai"), None);
        assert_eq!(Api::parse(""), None);
        assert_eq!(Api::parse("Ollama-Chat"), None);
    }

    #[test]
    fn serde_name_matches_cli_name() {
        for api in Api::ALL {
            let json = serde_json::to_string(&api).unwrap();
            assert_eq!(json, format!("\"{}\"", api.name()));
        }
    }

    #[test]
    fn default_paths() {
        assert_eq!(Api::OllamaGenerate.default_path(), "/api/generate");
        assert_eq!(Api::OllamaChat.default_path(), "/api/chat");
        assert_eq!(Api::OpenaiChat.default_path(), "/v1/chat/completions");
        assert_eq!(Api::OpenaiCompletions.default_path(), "/v1/completions");
    }

    #[test]
    fn families() {
        assert!(Api::OllamaGenerate.is_ollama() && !Api::OllamaGenerate.is_chat());
        assert!(Api::OllamaChat.is_ollama() && Api::OllamaChat.is_chat());
        assert!(!Api::OpenaiChat.is_ollama() && Api::OpenaiChat.is_chat());
        assert!(!Api::OpenaiCompletions.is_ollama() && !Api::OpenaiCompletions.is_chat());
    }
}

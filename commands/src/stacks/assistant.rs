//! The assistant: one trait ([`Engine`]) with two engines, the offline one (the domain's
//! deterministic catalog and rules, `atelier_domain::stacks::assistant`) and an LLM engine for
//! any OpenAI-compatible chat-completions endpoint (a local Ollama, vLLM or llama.cpp server, or
//! a hosted one). [`Assistant`] asks the LLM engine when one is configured and falls back to the
//! offline engine when it fails (timeouts, errors, an answer that is not JSON or not a valid
//! stack); every answer says which engine answered, which model, and the request's hash.
//!
//! The API key is sent in the `Authorization` header only: it never reaches events, logs or
//! answers (the engine's `Debug` hides it).

use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::stacks::assistant::{
    self, AnalysisFinding, Diagnosis, Generated, GenerationRequest, OptimizationGoals, Optimized,
    Recommendation, ResourceFigures,
};
use atelier_domain::stacks::compose;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why an engine did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// What an engine answers with, and who answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer<T> {
    /// The answer.
    pub value: T,
    /// `offline` or `llm`.
    pub engine: &'static str,
    /// The model (`None` for the offline engine).
    pub model: Option<String>,
    /// SHA-256 (hex) of the request, as the engine was given it.
    pub request_hash: String,
    /// Why the LLM engine's answer was not used, when the offline engine answered instead.
    pub fallback: Option<String>,
}

/// An engine of the assistant.
#[async_trait]
pub trait Engine: Send + Sync {
    /// `offline` or `llm`.
    fn name(&self) -> &'static str;
    /// The model it asks, if any.
    fn model(&self) -> Option<String>;
    /// A stack for a description.
    async fn generate(&self, request: &GenerationRequest) -> Result<Generated, EngineError>;
    /// A better configuration, with its changes.
    async fn optimize(
        &self,
        configuration: &Value,
        goals: &OptimizationGoals,
    ) -> Result<Optimized, EngineError>;
    /// Findings on a configuration.
    async fn analyze(&self, configuration: &Value) -> Result<Vec<AnalysisFinding>, EngineError>;
    /// Causes and fixes for a log.
    async fn troubleshoot(&self, log: &str) -> Result<Vec<Diagnosis>, EngineError>;
    /// Resource recommendations.
    async fn recommend(
        &self,
        figures: &ResourceFigures,
    ) -> Result<Vec<Recommendation>, EngineError>;
}

/// The offline engine: deterministic, always there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

#[async_trait]
impl Engine for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }
    fn model(&self) -> Option<String> {
        None
    }
    async fn generate(&self, request: &GenerationRequest) -> Result<Generated, EngineError> {
        Ok(assistant::generate(request))
    }
    async fn optimize(
        &self,
        configuration: &Value,
        goals: &OptimizationGoals,
    ) -> Result<Optimized, EngineError> {
        Ok(assistant::optimize(configuration, goals))
    }
    async fn analyze(&self, configuration: &Value) -> Result<Vec<AnalysisFinding>, EngineError> {
        Ok(assistant::analyze(configuration))
    }
    async fn troubleshoot(&self, log: &str) -> Result<Vec<Diagnosis>, EngineError> {
        Ok(assistant::troubleshoot(log))
    }
    async fn recommend(
        &self,
        figures: &ResourceFigures,
    ) -> Result<Vec<Recommendation>, EngineError> {
        Ok(assistant::recommend(figures))
    }
}

/// How to reach an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct LlmSettings {
    /// The API's base URL, up to `/v1` (`http://127.0.0.1:11434/v1` for a local Ollama); the
    /// engine posts to `{url}/chat/completions`.
    pub url: String,
    /// The model.
    pub model: String,
    /// The API key, if the endpoint wants one.
    pub api_key: Option<String>,
    /// How long one request may take.
    pub timeout: Duration,
    /// How many times a failed request (a network error, a 429 or a 5xx) is tried again.
    pub retries: u32,
}

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The LLM engine.
#[derive(Debug, Clone)]
pub struct Llm {
    settings: LlmSettings,
    client: reqwest::Client,
}

/// What every task is told.
const SYSTEM: &str = "You are Atelier's container platform assistant. You answer with one JSON \
object and nothing else, in exactly the shape the task gives. Docker Compose configurations \
follow the Compose Specification: a mapping with `services` (each with an `image` pinned to a \
version tag, never `latest`), and top-level `volumes` and `networks` declaring what services \
use. Never put a literal secret in an environment value: use ${VARIABLE} interpolation.";

impl Llm {
    /// An engine for these settings.
    pub fn new(settings: LlmSettings) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| EngineError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { settings, client })
    }

    /// Asks the model one task about `input`, requesting a JSON object, and reads the answer
    /// into `T`.
    async fn ask<T: DeserializeOwned>(&self, task: &str, input: &Value) -> Result<T, EngineError> {
        let body = json!({
            "model": self.settings.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": format!("{task}\n\nInput (JSON):\n{input}")},
            ],
        });
        let url = format!(
            "{}/chat/completions",
            self.settings.url.trim_end_matches('/')
        );
        let mut attempt = 0;
        let text = loop {
            attempt += 1;
            let mut request = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(key) = &self.settings.api_key {
                request = request.bearer_auth(key);
            }
            let outcome = match request.send().await {
                Ok(res) if res.status().is_success() => match res.text().await {
                    Ok(text) => Ok(text),
                    Err(e) => Err((true, format!("reading the answer failed: {e}"))),
                },
                Ok(res) => {
                    let status = res.status();
                    let retry = status.as_u16() == 429 || status.is_server_error();
                    Err((retry, format!("the endpoint answered {status}")))
                }
                Err(e) => Err((
                    true,
                    format!("the endpoint could not be reached: {}", e.without_url()),
                )),
            };
            match outcome {
                Ok(text) => break text,
                Err((true, why)) if attempt <= self.settings.retries => {
                    tracing::warn!(attempt, reason = %why, "LLM request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err((_, why)) => return Err(EngineError(why)),
            }
        };
        let reply: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError(format!("the endpoint's answer is not JSON: {e}")))?;
        let content = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| EngineError("the answer has no choices[0].message.content".into()))?;
        // Some models wrap JSON in a Markdown fence despite the instruction.
        let content = content
            .trim()
            .trim_start_matches("```json")
            .trim_start_matches("```")
            .trim_end_matches("```")
            .trim();
        serde_json::from_str(content)
            .map_err(|e| EngineError(format!("the model's answer is not the JSON asked for: {e}")))
    }
}

/// A configuration the model proposed, refused unless it passes validation.
fn validated(configuration: Value) -> Result<Value, EngineError> {
    let report = compose::validate(&configuration);
    if report.valid {
        Ok(configuration)
    } else {
        Err(EngineError(format!(
            "the model's configuration does not pass validation: {}",
            report
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}

#[derive(serde::Deserialize)]
struct GeneratedAnswer {
    name: String,
    configuration: Value,
    #[serde(default)]
    notes: Vec<String>,
}

#[derive(serde::Deserialize)]
struct OptimizedAnswer {
    configuration: Value,
    #[serde(default)]
    changes: Vec<ChangeAnswer>,
}

#[derive(serde::Deserialize)]
struct ChangeAnswer {
    #[serde(default)]
    path: String,
    #[serde(default)]
    rule: String,
    description: String,
}

#[derive(serde::Deserialize)]
struct Listed<T> {
    items: Vec<T>,
}

#[async_trait]
impl Engine for Llm {
    fn name(&self) -> &'static str {
        "llm"
    }
    fn model(&self) -> Option<String> {
        Some(self.settings.model.clone())
    }

    async fn generate(&self, request: &GenerationRequest) -> Result<Generated, EngineError> {
        let input = serde_json::to_value(request).map_err(|e| EngineError(e.to_string()))?;
        let answer: GeneratedAnswer = self
            .ask(
                "Write a Docker Compose configuration for this request. Answer \
                 {\"name\": a short slug, \"configuration\": the compose mapping, \"notes\": \
                 [what you assumed]}.",
                &input,
            )
            .await?;
        let configuration = validated(answer.configuration)?;
        let services = configuration["services"]
            .as_object()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        let name = answer.name.trim().to_owned();
        if name.is_empty() {
            return Err(EngineError("the model's answer has an empty name".into()));
        }
        Ok(Generated {
            name,
            configuration,
            services,
            notes: answer.notes,
        })
    }

    async fn optimize(
        &self,
        configuration: &Value,
        goals: &OptimizationGoals,
    ) -> Result<Optimized, EngineError> {
        let input = json!({"configuration": configuration, "goals": goals});
        let answer: OptimizedAnswer = self
            .ask(
                "Improve this Docker Compose configuration for the goals (resource limits, \
                 health checks, restart policies, pinned tags, read-only root filesystems, \
                 dropped capabilities, non-root users). Answer {\"configuration\": the whole \
                 improved mapping, \"changes\": [{\"path\", \"rule\", \"description\"}]}.",
                &input,
            )
            .await?;
        let improved = validated(answer.configuration)?;
        let diff = assistant::diff(configuration, &improved);
        Ok(Optimized {
            configuration: improved,
            changes: answer
                .changes
                .into_iter()
                .map(|c| assistant::Change {
                    path: c.path,
                    rule: c.rule,
                    description: c.description,
                    applied: true,
                })
                .collect(),
            diff,
        })
    }

    async fn analyze(&self, configuration: &Value) -> Result<Vec<AnalysisFinding>, EngineError> {
        let answer: Listed<AnalysisFinding> = self
            .ask(
                "Review this Docker Compose configuration as a platform engineer would. Answer \
                 {\"items\": [{\"path\", \"rule\", \"severity\": \"info\"|\"warning\"|\
                 \"critical\", \"message\", \"suggestion\"}]}.",
                configuration,
            )
            .await?;
        Ok(answer.items)
    }

    async fn troubleshoot(&self, log: &str) -> Result<Vec<Diagnosis>, EngineError> {
        let answer: Listed<Diagnosis> = self
            .ask(
                "Find why this deployment fails from its log. Answer {\"items\": [{\"cause\", \
                 \"rule\", \"evidence\": [log lines], \"fixes\": [..], \"confidence\": 0..1}]}, \
                 most likely first.",
                &json!({ "log": log }),
            )
            .await?;
        Ok(answer.items)
    }

    async fn recommend(
        &self,
        figures: &ResourceFigures,
    ) -> Result<Vec<Recommendation>, EngineError> {
        let input = serde_json::to_value(figures).map_err(|e| EngineError(e.to_string()))?;
        let answer: Listed<Recommendation> = self
            .ask(
                "Recommend resources for this deployment from its limits and usage. Answer \
                 {\"items\": [{\"resource\", \"current\", \"recommended\", \"reason\"}]}.",
                &input,
            )
            .await?;
        Ok(answer.items)
    }
}

/// The assistant: the LLM engine when configured, the offline engine otherwise or when the LLM
/// engine fails.
#[derive(Clone)]
pub struct Assistant {
    llm: Option<std::sync::Arc<dyn Engine>>,
}

impl std::fmt::Debug for Assistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assistant")
            .field("llm", &self.llm.as_ref().map(|e| e.model()))
            .finish()
    }
}

/// The SHA-256 (hex) of a request's canonical JSON.
pub fn request_hash(request: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

macro_rules! with_fallback {
    ($self:ident, $request:expr, |$engine:ident| $call:expr) => {{
        let request_hash = request_hash(&$request);
        let mut fallback = None;
        if let Some($engine) = &$self.llm {
            match $call.await {
                Ok(value) => {
                    return Answer {
                        value,
                        engine: $engine.name(),
                        model: $engine.model(),
                        request_hash,
                        fallback: None,
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the LLM engine failed; the offline engine answers");
                    fallback = Some(e.0);
                }
            }
        }
        let $engine = &Offline;
        let value = match $call.await {
            Ok(value) => value,
            // The offline engine does not fail.
            Err(e) => unreachable!("the offline engine failed: {e}"),
        };
        Answer {
            value,
            engine: "offline",
            model: None,
            request_hash,
            fallback,
        }
    }};
}

impl Assistant {
    /// The offline engine alone.
    pub fn offline() -> Self {
        Self { llm: None }
    }

    /// The LLM engine, falling back to the offline one.
    pub fn with_llm(engine: std::sync::Arc<dyn Engine>) -> Self {
        Self { llm: Some(engine) }
    }

    /// The model the LLM engine asks, if one is configured.
    pub fn model(&self) -> Option<String> {
        self.llm.as_ref().and_then(|e| e.model())
    }

    /// A stack for a description.
    pub async fn generate(&self, request: &GenerationRequest) -> Answer<Generated> {
        with_fallback!(self, request, |engine| engine.generate(request))
    }

    /// A better configuration.
    pub async fn optimize(
        &self,
        configuration: &Value,
        goals: &OptimizationGoals,
    ) -> Answer<Optimized> {
        with_fallback!(
            self,
            json!({"configuration": configuration, "goals": goals}),
            |engine| engine.optimize(configuration, goals)
        )
    }

    /// Findings on a configuration.
    pub async fn analyze(&self, configuration: &Value) -> Answer<Vec<AnalysisFinding>> {
        with_fallback!(self, configuration, |engine| engine.analyze(configuration))
    }

    /// Causes and fixes for a log.
    pub async fn troubleshoot(&self, log: &str) -> Answer<Vec<Diagnosis>> {
        with_fallback!(self, json!({ "log": log }), |engine| engine
            .troubleshoot(log))
    }

    /// Resource recommendations.
    pub async fn recommend(&self, figures: &ResourceFigures) -> Answer<Vec<Recommendation>> {
        with_fallback!(self, figures, |engine| engine.recommend(figures))
    }
}

//! The offline assistant: the deterministic engine behind `/stacks/generate`,
//! `/stacks/{id}/optimize` and `/llm/{analyze,troubleshoot,optimize}`, and the fallback of the
//! LLM engine.
//!
//! Everything here is a pure function of its input: no IO, no clock, no randomness, so the same
//! request always gets the same answer (the audit can hash a request and find its answer again).
//! Configurations are compose documents held as JSON mappings (`{"services": {...},
//! "volumes": {...}, "networks": {...}}`); paths in answers read like `services.web.ports[1]`.
//!
//! - [`generate`]: a stack from a description, with services chosen from a catalog of templates
//!   (`catalog`) and shaped by the platform, environment, resource constraints and security level;
//! - [`optimize`]: rules that add what a configuration lacks (limits, health checks, restart
//!   policies, pinned tags, read-only root filesystems, dropped capabilities, non-root users,
//!   `no-new-privileges`, log rotation), idempotent, with the changes listed and a unified diff;
//! - [`analyze`]: best-practice findings beyond validity;
//! - [`troubleshoot`]: causes and fixes from log patterns;
//! - [`recommend`]: rightsizing from a deployment's figures.

use serde::{Deserialize, Serialize};

use crate::value::{InvalidValue, invalid, text};

mod analyze;
mod catalog;
mod document;
mod generate;
mod optimize;
mod recommend;
mod troubleshoot;

pub use analyze::{AnalysisFinding, Severity, analyze};
pub use generate::{Generated, generate};
pub use optimize::{Change, Goal, OptimizationGoals, Optimized, diff, optimize, to_yaml};
pub use recommend::{Recommendation, ResourceFigures, recommend};
pub use troubleshoot::{Diagnosis, troubleshoot};

/// Shortest description, in characters (the seed's `min_length`).
pub const MIN_DESCRIPTION: usize = 10;
/// Longest description, in characters (the seed's `max_length`).
pub const MAX_DESCRIPTION: usize = 1000;
/// Most CPUs a constraint may name.
pub const MAX_CPUS: f64 = 1024.0;
/// Least memory a constraint may name, in MB: below it no template starts.
pub const MIN_MEMORY_MB: u64 = 64;
/// Most memory a constraint may name, in MB (16 TiB).
pub const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024;

/// Where a stack runs: it decides the `deploy:` section, restart policies and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetPlatform {
    /// `docker compose up`.
    #[default]
    Docker,
    /// `docker stack deploy`.
    #[serde(alias = "swarm")]
    DockerSwarm,
    /// Kubernetes, through `kompose convert` (the configuration stays a compose document).
    #[serde(alias = "k8s")]
    Kubernetes,
}

impl TargetPlatform {
    /// Its name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::DockerSwarm => "docker_swarm",
            Self::Kubernetes => "kubernetes",
        }
    }

    /// Parses `docker`, `docker_swarm` (or `swarm`), `kubernetes` (or `k8s`).
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "docker" => Ok(Self::Docker),
            "docker_swarm" | "swarm" => Ok(Self::DockerSwarm),
            "kubernetes" | "k8s" => Ok(Self::Kubernetes),
            _ => Err(invalid(
                "target_platform",
                "must be one of docker, docker_swarm, kubernetes",
            )),
        }
    }
}

/// What a stack is for: development exposes and mounts, production hardens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentType {
    /// Ports published, source bind-mounted, reloading commands.
    #[default]
    #[serde(alias = "dev")]
    Development,
    /// Production's shape with one replica.
    Staging,
    /// Restart policies, health checks everywhere, no bind-mounted source, replicas.
    #[serde(alias = "prod")]
    Production,
}

impl EnvironmentType {
    /// Its name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    /// Parses `development` (`dev`), `staging`, `production` (`prod`).
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            _ => Err(invalid(
                "environment_type",
                "must be one of development, staging, production",
            )),
        }
    }

    /// Staging and production: the hardened shape.
    pub fn is_deployed(self) -> bool {
        !matches!(self, Self::Development)
    }
}

/// How hard a stack is locked down.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// Pinned tags and no literal secret, nothing more.
    Basic,
    /// Also `no-new-privileges`, and an internal network for data services once deployed.
    #[default]
    Standard,
    /// Also read-only root filesystems, `cap_drop: [ALL]`, non-root users where the image
    /// allows.
    High,
}

impl SecurityLevel {
    /// Its name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Standard => "standard",
            Self::High => "high",
        }
    }

    /// Parses `basic`, `standard`, `high`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "basic" => Ok(Self::Basic),
            "standard" => Ok(Self::Standard),
            "high" => Ok(Self::High),
            _ => Err(invalid(
                "security_level",
                "must be one of basic, standard, high",
            )),
        }
    }
}

/// The most a whole stack may use: every service's limits (times its replicas) add up to at
/// most these.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceConstraints {
    /// CPUs for the whole stack (`0 < max_cpus <= 1024`).
    pub max_cpus: Option<f64>,
    /// Memory for the whole stack, in MB (64 MB to 16 TiB).
    pub max_memory_mb: Option<u64>,
}

impl ResourceConstraints {
    /// Every invalid field, named as the API names it.
    pub fn check(&self) -> Vec<InvalidValue> {
        let mut errors = Vec::new();
        if let Some(cpus) = self.max_cpus
            && !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS)
        {
            errors.push(invalid(
                "resource_constraints.max_cpus",
                format!("must be a number above 0 and at most {MAX_CPUS}"),
            ));
        }
        if let Some(memory) = self.max_memory_mb
            && !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory)
        {
            errors.push(invalid(
                "resource_constraints.max_memory_mb",
                format!("must be {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB"),
            ));
        }
        errors
    }
}

/// A request to generate a stack: the seed's `StackGenerationRequest` with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// What the stack is, in words (10 to 1000 characters).
    pub description: String,
    /// Where it runs (default `docker`).
    #[serde(default)]
    pub target_platform: TargetPlatform,
    /// What it is for (default `development`).
    #[serde(default)]
    pub environment_type: EnvironmentType,
    /// The most it may use, if anything.
    #[serde(default)]
    pub resource_constraints: Option<ResourceConstraints>,
    /// How hard it is locked down (default `standard`).
    #[serde(default)]
    pub security_level: SecurityLevel,
}

impl GenerationRequest {
    /// A request with the seed's defaults for everything but the description (not checked).
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            target_platform: TargetPlatform::default(),
            environment_type: EnvironmentType::default(),
            resource_constraints: None,
            security_level: SecurityLevel::default(),
        }
    }

    /// Parses a request body, reporting every invalid field at once: the description (see
    /// [`parse_description`]), each enumeration's value, the constraints' numbers, and fields
    /// the request does not know.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, Vec<InvalidValue>> {
        let Some(fields) = body.as_object() else {
            return Err(vec![invalid("body", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let mut request = Self::new(String::new());
        match fields.get("description") {
            Some(serde_json::Value::String(raw)) => match parse_description(raw) {
                Ok(description) => request.description = description,
                Err(e) => errors.push(e),
            },
            Some(_) => errors.push(invalid("description", "must be a string")),
            None => errors.push(invalid("description", "is required")),
        }
        let mut choice = |field: &'static str| match fields.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(raw)) => Some(raw.clone()),
            Some(_) => {
                errors.push(invalid(field, "must be a string"));
                None
            }
        };
        let platform = choice("target_platform");
        let environment = choice("environment_type");
        let security = choice("security_level");
        if let Some(raw) = platform {
            TargetPlatform::parse(&raw)
                .map_or_else(|e| errors.push(e), |value| request.target_platform = value);
        }
        if let Some(raw) = environment {
            EnvironmentType::parse(&raw)
                .map_or_else(|e| errors.push(e), |value| request.environment_type = value);
        }
        if let Some(raw) = security {
            SecurityLevel::parse(&raw)
                .map_or_else(|e| errors.push(e), |value| request.security_level = value);
        }
        match fields.get("resource_constraints") {
            None | Some(serde_json::Value::Null) => {}
            Some(raw) => match parse_constraints(raw) {
                Ok(constraints) => request.resource_constraints = Some(constraints),
                Err(mut more) => errors.append(&mut more),
            },
        }
        for key in fields.keys() {
            if ![
                "description",
                "target_platform",
                "environment_type",
                "resource_constraints",
                "security_level",
            ]
            .contains(&key.as_str())
            {
                errors.push(invalid("body", format!("unknown field {key:?}")));
            }
        }
        if errors.is_empty() {
            Ok(request)
        } else {
            Err(errors)
        }
    }

    /// Checks a request built in code or deserialized: the same rules as [`Self::from_json`],
    /// with the description trimmed.
    pub fn checked(mut self) -> Result<Self, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        match parse_description(&self.description) {
            Ok(description) => self.description = description,
            Err(e) => errors.push(e),
        }
        if let Some(constraints) = &self.resource_constraints {
            errors.extend(constraints.check());
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }
}

fn parse_constraints(raw: &serde_json::Value) -> Result<ResourceConstraints, Vec<InvalidValue>> {
    let Some(fields) = raw.as_object() else {
        return Err(vec![invalid(
            "resource_constraints",
            "must be an object with max_cpus and/or max_memory_mb",
        )]);
    };
    let mut errors = Vec::new();
    let mut constraints = ResourceConstraints::default();
    for (key, value) in fields {
        match (key.as_str(), value) {
            (_, serde_json::Value::Null) => {}
            ("max_cpus", value) => match value.as_f64() {
                Some(cpus) => constraints.max_cpus = Some(cpus),
                None => errors.push(invalid("resource_constraints.max_cpus", "must be a number")),
            },
            ("max_memory_mb", value) => match value.as_u64() {
                Some(memory) => constraints.max_memory_mb = Some(memory),
                None => errors.push(invalid(
                    "resource_constraints.max_memory_mb",
                    "must be a whole number of MB",
                )),
            },
            (other, _) => errors.push(invalid(
                "resource_constraints",
                format!("unknown field {other:?} (max_cpus, max_memory_mb)"),
            )),
        }
    }
    errors.extend(constraints.check());
    if errors.is_empty() {
        Ok(constraints)
    } else {
        Err(errors)
    }
}

/// A stack's description: trimmed, 10 to 1000 characters (counted in characters, not bytes),
/// no control characters but line breaks and tabs.
pub fn parse_description(s: &str) -> Result<String, InvalidValue> {
    // Line breaks and tabs are ordinary in a description: check the rest with `text`'s rules.
    let flat: String = s
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    text("description", &flat, MIN_DESCRIPTION, MAX_DESCRIPTION)?;
    Ok(s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_description_is_trimmed_and_counted_in_characters() {
        assert_eq!(
            parse_description("  a Django app  ").unwrap(),
            "a Django app"
        );
        // Ten characters of two bytes each pass; nine do not.
        assert!(parse_description(&"é".repeat(10)).is_ok());
        let err = parse_description(&"é".repeat(9)).unwrap_err();
        assert_eq!(err.field, "description");
        assert!(err.message.contains("at least 10"), "{}", err.message);
    }

    #[test]
    fn a_description_over_a_thousand_characters_is_refused_naming_the_field() {
        assert!(parse_description(&"a".repeat(1000)).is_ok());
        let err = parse_description(&"a".repeat(1001)).unwrap_err();
        assert_eq!(err.field, "description");
        assert!(err.message.contains("at most 1000"), "{}", err.message);
    }

    #[test]
    fn a_description_may_span_lines_but_not_hold_other_control_characters() {
        assert!(parse_description("a Django app\nwith PostgreSQL").is_ok());
        assert!(parse_description("a Django app\u{7}with PostgreSQL").is_err());
    }

    #[test]
    fn a_request_takes_the_seeds_defaults() {
        let request =
            GenerationRequest::from_json(&json!({"description": "a Flask app with Redis"}))
                .unwrap();
        assert_eq!(request.target_platform, TargetPlatform::Docker);
        assert_eq!(request.environment_type, EnvironmentType::Development);
        assert_eq!(request.security_level, SecurityLevel::Standard);
        assert_eq!(request.resource_constraints, None);
        let same: GenerationRequest =
            serde_json::from_value(json!({"description": "a Flask app with Redis"})).unwrap();
        assert_eq!(same, request);
    }

    #[test]
    fn a_request_reports_every_invalid_field_at_once() {
        let errors = GenerationRequest::from_json(&json!({
            "description": "short",
            "target_platform": "nomad",
            "environment_type": "qa",
            "security_level": 3,
            "resource_constraints": {"max_cpus": -1, "max_memory_mb": 1},
            "colour": "blue",
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        for field in [
            "description",
            "target_platform",
            "environment_type",
            "security_level",
            "resource_constraints.max_cpus",
            "resource_constraints.max_memory_mb",
            "body",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
    }

    #[test]
    fn enumerations_read_their_snake_case_names_and_aliases() {
        let request = GenerationRequest::from_json(&json!({
            "description": "a Flask app with Redis",
            "target_platform": "docker_swarm",
            "environment_type": "prod",
            "security_level": "high",
            "resource_constraints": {"max_cpus": 2.5, "max_memory_mb": 2048},
        }))
        .unwrap();
        assert_eq!(request.target_platform, TargetPlatform::DockerSwarm);
        assert_eq!(request.environment_type, EnvironmentType::Production);
        assert_eq!(request.security_level, SecurityLevel::High);
        assert_eq!(
            request.resource_constraints,
            Some(ResourceConstraints {
                max_cpus: Some(2.5),
                max_memory_mb: Some(2048)
            })
        );
        assert_eq!(
            serde_json::to_value(TargetPlatform::DockerSwarm).unwrap(),
            json!("docker_swarm")
        );
        assert_eq!(
            serde_json::from_value::<TargetPlatform>(json!("k8s")).unwrap(),
            TargetPlatform::Kubernetes
        );
    }

    #[test]
    fn a_checked_request_trims_its_description_and_checks_its_constraints() {
        let mut request = GenerationRequest::new("   a Flask app with Redis   ");
        request.resource_constraints = Some(ResourceConstraints {
            max_cpus: Some(f64::NAN),
            max_memory_mb: None,
        });
        let errors = request.clone().checked().unwrap_err();
        assert_eq!(errors[0].field, "resource_constraints.max_cpus");
        request.resource_constraints = None;
        assert_eq!(
            request.checked().unwrap().description,
            "a Flask app with Redis"
        );
    }
}

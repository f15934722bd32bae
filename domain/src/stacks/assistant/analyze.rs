//! Best-practice analysis for `/llm/analyze`: what a reviewer says of a configuration that is
//! valid, service by service (in document order), from the most to the least serious rule.
//!
//! | rule | severity |
//! |---|---|
//! | `not_a_mapping`, `no_services` | critical |
//! | `privileged`, `docker_socket`, `plain_secret`, `exposed_database_port` | critical |
//! | `host_network`, `unpinned_image`, `root_user`, `no_healthcheck`, `no_resource_limits`, `no_restart_policy` | warning |
//! | `writable_root`, `capabilities_kept`, `no_new_privileges`, `bind_mounted_source` | info |

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalog::{self, Kind, Template};
use super::document::{self, ImageRef};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth fixing before production.
    Warning,
    /// A risk now.
    Critical,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisFinding {
    /// Where: `services.db.ports[0]`.
    pub path: String,
    /// The rule: `exposed_database_port`…
    pub rule: String,
    /// How serious.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub suggestion: String,
}

fn finding(
    path: String,
    rule: &str,
    severity: Severity,
    message: String,
    suggestion: impl Into<String>,
) -> AnalysisFinding {
    AnalysisFinding {
        path,
        rule: rule.to_owned(),
        severity,
        message,
        suggestion: suggestion.into(),
    }
}

/// Findings on a configuration: services in document order, each's findings from critical to
/// info. A configuration without findings gets an empty list.
pub fn analyze(config: &Value) -> Vec<AnalysisFinding> {
    if !config.is_object() {
        return vec![finding(
            String::new(),
            "not_a_mapping",
            Severity::Critical,
            "the configuration is not a mapping".into(),
            "give a compose document: a mapping with services",
        )];
    }
    let services = document::services(config);
    if services.is_empty() {
        return vec![finding(
            "services".into(),
            "no_services",
            Severity::Critical,
            "the configuration defines no service".into(),
            "add at least one service under services",
        )];
    }
    let mut out = Vec::new();
    for (name, s) in services {
        let template = document::image(s)
            .filter(|raw| !ImageRef::is_interpolated(raw))
            .and_then(|raw| catalog::service_by_image(ImageRef::parse(raw).repository()));
        let mut findings = service(name, s, template);
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        out.extend(findings);
    }
    out
}

fn service(
    name: &str,
    s: &Map<String, Value>,
    template: Option<&Template>,
) -> Vec<AnalysisFinding> {
    let at = |key: &str| format!("services.{name}.{key}");
    let mut out = Vec::new();
    let is_data =
        template.is_some_and(|t| matches!(t.kind, Kind::Database | Kind::Cache | Kind::Queue));

    if s.get("privileged").and_then(Value::as_bool) == Some(true) {
        out.push(finding(
            at("privileged"),
            "privileged",
            Severity::Critical,
            format!("{name} runs privileged: it can take over the host"),
            "remove privileged: true; add only the capabilities or devices it needs",
        ));
    }
    for (source, path) in document::volume_sources(name, s) {
        if source == "/var/run/docker.sock" || source == "/run/docker.sock" {
            out.push(finding(
                path,
                "docker_socket",
                Severity::Critical,
                format!("{name} mounts the Docker socket: whoever controls it controls the host"),
                "give it a socket proxy that allows only the calls it makes, or remove the mount",
            ));
        } else if source.starts_with("./") || source == "." {
            out.push(finding(
                path,
                "bind_mounted_source",
                Severity::Info,
                format!("{name} bind-mounts {source} from the host"),
                "fine in development; once deployed, build the files into the image",
            ));
        }
    }
    for (key, value, path) in document::environment(name, s) {
        if document::is_secret_name(&key) && value.as_deref().is_some_and(document::is_literal) {
            out.push(finding(
                path,
                "plain_secret",
                Severity::Critical,
                format!("{key} holds a secret in plain text"),
                format!("refer to it (${{{key}}}) and set it in the environment, or use secrets:"),
            ));
        }
    }
    if is_data {
        for port in document::ports(name, s) {
            if !port.is_loopback() && port.host_port.is_some() {
                out.push(finding(
                    port.path.clone(),
                    "exposed_database_port",
                    Severity::Critical,
                    format!(
                        "{name} publishes its port {} on every interface of the host",
                        port.container_port
                    ),
                    "remove the port: the apps reach it by service name; bind it to 127.0.0.1 \
                     if this machine needs it",
                ));
            }
        }
    }
    if s.get("network_mode").and_then(Value::as_str) == Some("host") {
        out.push(finding(
            at("network_mode"),
            "host_network",
            Severity::Warning,
            format!("{name} shares the host's network: every port it opens is public"),
            "use a network of the stack and publish only the ports needed",
        ));
    }
    if let Some(raw) = document::image(s).filter(|raw| !ImageRef::is_interpolated(raw)) {
        let reference = ImageRef::parse(raw);
        if !reference.is_pinned() {
            let suggestion = match catalog::stable_tag(reference.repository()) {
                Some(tag) => format!("pin it: {}:{tag}", reference.name),
                None => "pin it to a version or a digest".to_owned(),
            };
            out.push(finding(
                at("image"),
                "unpinned_image",
                Severity::Warning,
                format!("{raw} moves: the next pull may run something else"),
                suggestion,
            ));
        }
    }
    // An image the catalog knows to start as root and drop privileges itself is fine.
    let drops_by_itself = template.is_some_and(|t| t.user.is_none());
    if !document::runs_as_non_root(s) && !drops_by_itself {
        let suggestion = match template.and_then(|t| t.user) {
            Some(user) => format!("run it as {user} (user: {user})"),
            None => {
                "run it as a non-root user (user: \"1000:1000\") if the image allows it".to_owned()
            }
        };
        out.push(finding(
            at("user"),
            "root_user",
            Severity::Warning,
            format!("{name} runs as root"),
            suggestion,
        ));
    }
    let disabled = s
        .get("healthcheck")
        .and_then(|h| h.get("disable"))
        .and_then(Value::as_bool)
        == Some(true);
    if !s.contains_key("healthcheck") || disabled {
        let suggestion = match template.and_then(|t| t.healthcheck) {
            Some(test) => format!("add a health check: {}", test[1..].join(" ")),
            None => "add a health check that fails when it cannot serve".to_owned(),
        };
        out.push(finding(
            at("healthcheck"),
            "no_healthcheck",
            Severity::Warning,
            if disabled {
                format!("{name}'s health check is disabled")
            } else {
                format!("{name} has no health check: nothing knows when it hangs")
            },
            suggestion,
        ));
    }
    if !document::has_limits(s) {
        let suggestion = match template {
            Some(t) => format!(
                "limit it: deploy.resources.limits {{cpus: \"{}\", memory: {}M}}",
                super::generate::cpus_text(t.cpus),
                t.memory_mb
            ),
            None => "limit it: deploy.resources.limits (cpus, memory)".to_owned(),
        };
        out.push(finding(
            at("deploy.resources.limits"),
            "no_resource_limits",
            Severity::Warning,
            format!("{name} has no resource limits: it can starve the rest of the host"),
            suggestion,
        ));
    }
    if !document::has_restart_policy(s) {
        out.push(finding(
            at("restart"),
            "no_restart_policy",
            Severity::Warning,
            format!("{name} has no restart policy: after a crash it stays down"),
            "restart: unless-stopped (or deploy.restart_policy on swarm)",
        ));
    }
    if s.get("read_only").and_then(Value::as_bool) != Some(true) {
        out.push(finding(
            at("read_only"),
            "writable_root",
            Severity::Info,
            format!("{name}'s root filesystem is writable"),
            match template {
                Some(t) if !t.tmpfs.is_empty() => {
                    format!("read_only: true, with tmpfs: [{}]", t.tmpfs.join(", "))
                }
                _ => "read_only: true, with a tmpfs where it writes".to_owned(),
            },
        ));
    }
    if !s.contains_key("cap_drop") {
        out.push(finding(
            at("cap_drop"),
            "capabilities_kept",
            Severity::Info,
            format!("{name} keeps Docker's default capabilities"),
            match template {
                Some(t) if !t.cap_add.is_empty() => {
                    format!("cap_drop: [ALL], cap_add: [{}]", t.cap_add.join(", "))
                }
                _ => "cap_drop: [ALL], adding back only what it needs".to_owned(),
            },
        ));
    }
    if !document::mentions_no_new_privileges(s) {
        out.push(finding(
            at("security_opt"),
            "no_new_privileges",
            Severity::Info,
            format!("{name}'s processes may gain privileges through setuid binaries"),
            "security_opt: [\"no-new-privileges:true\"]",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{
        EnvironmentType, GenerationRequest, OptimizationGoals, SecurityLevel, TargetPlatform,
        generate, optimize,
    };
    use super::*;
    use serde_json::json;

    fn rules(findings: &[AnalysisFinding]) -> Vec<(&str, &str)> {
        findings
            .iter()
            .map(|f| (f.path.as_str(), f.rule.as_str()))
            .collect()
    }

    #[test]
    fn an_exposed_database_with_a_plain_password_is_critical() {
        let findings = analyze(&json!({"services": {"db": {
            "image": "postgres:latest",
            "ports": ["5432:5432"],
            "environment": ["POSTGRES_PASSWORD=hunter2", "POSTGRES_USER=app"],
        }}}));
        let found = rules(&findings);
        assert!(found.contains(&("services.db.ports[0]", "exposed_database_port")));
        assert!(found.contains(&("services.db.environment[0]", "plain_secret")));
        assert!(found.contains(&("services.db.image", "unpinned_image")));
        let criticals = findings
            .iter()
            .take_while(|f| f.severity == Severity::Critical)
            .count();
        assert_eq!(criticals, 2, "critical findings come first: {found:?}");
        let pin = findings
            .iter()
            .find(|f| f.rule == "unpinned_image")
            .unwrap();
        assert_eq!(pin.suggestion, "pin it: postgres:16.4");
    }

    #[test]
    fn a_database_on_loopback_or_unpublished_is_not_exposed() {
        let findings = analyze(&json!({"services": {"db": {
            "image": "postgres:16.4", "ports": ["127.0.0.1:5432:5432"],
        }, "cache": {"image": "redis:7.4.1", "expose": ["6379"]}}}));
        assert!(!findings.iter().any(|f| f.rule == "exposed_database_port"));
    }

    #[test]
    fn a_bare_service_misses_its_healthcheck_limits_restart_policy_and_user() {
        let findings = analyze(&json!({"services": {"app": {"image": "acme/app:1.0"}}}));
        let found: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(
            found,
            [
                "root_user",
                "no_healthcheck",
                "no_resource_limits",
                "no_restart_policy",
                "writable_root",
                "capabilities_kept",
                "no_new_privileges"
            ]
        );
    }

    #[test]
    fn privileged_services_the_docker_socket_and_host_networking_are_flagged() {
        let findings = analyze(&json!({"services": {"agent": {
            "image": "acme/agent:2",
            "privileged": true,
            "network_mode": "host",
            "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
        }}}));
        let found = rules(&findings);
        assert!(found.contains(&("services.agent.privileged", "privileged")));
        assert!(found.contains(&("services.agent.volumes[0]", "docker_socket")));
        assert!(found.contains(&("services.agent.network_mode", "host_network")));
    }

    #[test]
    fn a_generated_hardened_stack_has_no_warning_on_its_data_services_once_optimized() {
        let generated = generate(&GenerationRequest {
            description: "a Django app with PostgreSQL and Redis behind nginx".into(),
            target_platform: TargetPlatform::Docker,
            environment_type: EnvironmentType::Production,
            resource_constraints: None,
            security_level: SecurityLevel::High,
        });
        let optimized = optimize(&generated.configuration, &OptimizationGoals::all());
        let findings = analyze(&optimized.configuration);
        let serious: Vec<_> = findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .collect();
        assert!(serious.is_empty(), "{serious:#?}");
    }

    #[test]
    fn a_non_mapping_or_an_empty_document_is_critical() {
        assert_eq!(analyze(&json!([1, 2]))[0].rule, "not_a_mapping");
        assert_eq!(analyze(&json!({"services": {}}))[0].rule, "no_services");
    }
}

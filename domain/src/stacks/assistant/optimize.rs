//! Optimization by rules: each adds what a service lacks and never touches what it says, so
//! optimizing an optimized configuration changes nothing.
//!
//! Rules, by goal (no goal = all):
//!
//! | rule | goals | what it does |
//! |---|---|---|
//! | `pinned_tag` | reliability, security | `:latest` or no tag → the catalog's stable tag, else a change saying to pin |
//! | `resource_limits` | cost, performance, reliability | `deploy.resources.limits` from the catalog, else 1 CPU and 512M |
//! | `shm_size` | performance | PostgreSQL's shared memory beyond Docker's 64M |
//! | `healthcheck` | reliability | the catalog's health check for known images |
//! | `restart_policy` | reliability | `restart: unless-stopped`, or `deploy.restart_policy` on swarm-shaped documents |
//! | `log_rotation` | reliability, cost | `json-file` logs capped at 3 × 10m |
//! | `non_root_user` | security | the catalog's non-root user |
//! | `read_only_root` | security | `read_only: true` with the tmpfs the image needs (known images) |
//! | `cap_drop` | security | `cap_drop: [ALL]` plus what the image needs (known images, or any non-root service) |
//! | `no_new_privileges` | security | `security_opt: [no-new-privileges:true]` |
//!
//! What a rule cannot do safely for an unknown image it lists as a change with
//! `applied: false`, and leaves the configuration alone.
//!
//! The diff is a unified diff of the YAML text before and after (`similar` for the diff,
//! `serde_norway` for YAML: the maintained fork of the deprecated `serde_yaml`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::catalog;
use super::document::{self, ImageRef};
use super::generate::{cpus_text, memory_text};

/// What an optimization aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Limits so that no service starves the others; PostgreSQL's shared memory.
    Performance,
    /// Least privilege: users, capabilities, read-only roots, pinned images.
    Security,
    /// Health checks, restart policies, pinned images, log rotation.
    Reliability,
    /// Limits and log rotation: what a stack may consume.
    #[serde(alias = "resources")]
    Cost,
}

/// The goals of an optimization; none means all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OptimizationGoals {
    /// The goals.
    #[serde(default)]
    pub goals: Vec<Goal>,
}

impl OptimizationGoals {
    /// Every goal.
    pub fn all() -> Self {
        Self { goals: Vec::new() }
    }

    /// Whether a rule serving these goals runs.
    fn wants(&self, any_of: &[Goal]) -> bool {
        self.goals.is_empty() || any_of.iter().any(|g| self.goals.contains(g))
    }
}

/// One change an optimization made, or would make if it knew the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Where: `services.web.healthcheck`.
    pub path: String,
    /// The rule: `healthcheck`, `pinned_tag`…
    pub rule: String,
    /// What changed and why, for a person.
    pub description: String,
    /// Whether the configuration was changed (false: advice only).
    pub applied: bool,
}

/// An optimized configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optimized {
    /// The configuration after the rules.
    pub configuration: Value,
    /// The changes, by service (in document order) and rule.
    pub changes: Vec<Change>,
    /// A unified diff of the YAML before and after; empty when nothing changed.
    pub diff: String,
}

/// The configuration as YAML text (keys in the order held: sorted).
pub fn to_yaml(config: &Value) -> String {
    // A JSON value always serializes: every map key is a string.
    serde_norway::to_string(config).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
}

/// A unified diff of two configurations' YAML text; empty when they are the same.
pub fn diff(before: &Value, after: &Value) -> String {
    if before == after {
        return String::new();
    }
    let (before, after) = (to_yaml(before), to_yaml(after));
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header("before", "after")
        .to_string()
}

struct Rules<'a> {
    goals: &'a OptimizationGoals,
    swarm: bool,
    changes: Vec<Change>,
}

impl Rules<'_> {
    fn applied(&mut self, path: String, rule: &str, description: String) {
        self.changes.push(Change {
            path,
            rule: rule.to_owned(),
            description,
            applied: true,
        });
    }

    fn advice(&mut self, path: String, rule: &str, description: String) {
        self.changes.push(Change {
            path,
            rule: rule.to_owned(),
            description,
            applied: false,
        });
    }

    fn service(&mut self, name: &str, s: &mut Map<String, Value>) {
        let at = |key: &str| format!("services.{name}.{key}");
        // Pin first: the rules below know the image by its repository.
        let image = document::image(s).map(str::to_owned);
        let interpolated = image.as_deref().is_some_and(ImageRef::is_interpolated);
        if self.goals.wants(&[Goal::Reliability, Goal::Security])
            && let Some(raw) = image.as_deref()
            && !interpolated
        {
            let reference = ImageRef::parse(raw);
            if !reference.is_pinned() {
                match catalog::stable_tag(reference.repository()) {
                    Some(tag) => {
                        let pinned = format!("{}:{tag}", reference.name);
                        self.applied(
                            at("image"),
                            "pinned_tag",
                            format!(
                                "pinned {raw} to {pinned}: a moving tag changes what runs on \
                                 the next pull"
                            ),
                        );
                        s.insert("image".into(), json!(pinned));
                    }
                    None => self.advice(
                        at("image"),
                        "pinned_tag",
                        format!(
                            "pin {raw} to a version or a digest: no stable tag is known for it"
                        ),
                    ),
                }
            }
        }
        let template = document::image(s)
            .filter(|_| !interpolated)
            .and_then(|raw| catalog::service_by_image(ImageRef::parse(raw).repository()));
        let label = template.map_or_else(|| "this service".to_owned(), |t| t.key.to_owned());

        if self
            .goals
            .wants(&[Goal::Cost, Goal::Performance, Goal::Reliability])
            && !document::has_limits(s)
        {
            let (cpus, memory) = template.map_or((1.0, 512), |t| (t.cpus, t.memory_mb));
            let deploy = object(s, "deploy");
            let resources = object(deploy, "resources");
            resources.insert(
                "limits".into(),
                json!({"cpus": cpus_text(cpus), "memory": memory_text(memory)}),
            );
            let origin = if template.is_some() {
                format!("{label}'s usual needs")
            } else {
                "a default: adjust it from the service's usage".to_owned()
            };
            self.applied(
                at("deploy.resources.limits"),
                "resource_limits",
                format!(
                    "limited to {} CPU and {} ({origin}): a runaway service no longer starves \
                     the others",
                    cpus_text(cpus),
                    memory_text(memory)
                ),
            );
        }

        if self.goals.wants(&[Goal::Performance])
            && template.is_some_and(|t| t.key == "postgres")
            && !s.contains_key("shm_size")
        {
            s.insert("shm_size".into(), json!("256m"));
            self.applied(
                at("shm_size"),
                "shm_size",
                "shared memory raised to 256m: PostgreSQL's parallel queries fail in Docker's \
                 default 64M"
                    .to_owned(),
            );
        }

        if self.goals.wants(&[Goal::Reliability]) && !s.contains_key("healthcheck") {
            match template.and_then(|t| t.healthcheck) {
                Some(test) => {
                    s.insert("healthcheck".into(), catalog::healthcheck(test));
                    self.applied(
                        at("healthcheck"),
                        "healthcheck",
                        format!(
                            "added {label}'s health check ({}): dependents can wait for it to \
                             be ready, orchestrators replace it when it hangs",
                            test[1..].join(" ")
                        ),
                    );
                }
                None => self.advice(
                    at("healthcheck"),
                    "healthcheck",
                    "add a health check (a command that fails when the service cannot serve)"
                        .to_owned(),
                ),
            }
        }

        if self.goals.wants(&[Goal::Reliability]) && !document::has_restart_policy(s) {
            if self.swarm {
                let deploy = object(s, "deploy");
                deploy.insert(
                    "restart_policy".into(),
                    json!({"condition": "any", "delay": "5s", "window": "120s"}),
                );
                self.applied(
                    at("deploy.restart_policy"),
                    "restart_policy",
                    "restarts on any exit, 5s apart: swarm reads its policy from deploy".to_owned(),
                );
            } else {
                s.insert("restart".into(), json!("unless-stopped"));
                self.applied(
                    at("restart"),
                    "restart_policy",
                    "restart: unless-stopped: the service comes back after a crash or a reboot"
                        .to_owned(),
                );
            }
        }

        if self.goals.wants(&[Goal::Reliability, Goal::Cost]) && !s.contains_key("logging") {
            s.insert(
                "logging".into(),
                json!({"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}),
            );
            self.applied(
                at("logging"),
                "log_rotation",
                "logs rotated at 10m, 3 files kept: they no longer fill the disk".to_owned(),
            );
        }

        if self.goals.wants(&[Goal::Security]) {
            if !s.contains_key("user") {
                match template {
                    Some(t) if t.user.is_some() => {
                        let user = t.user.unwrap_or_default();
                        s.insert("user".into(), json!(user));
                        self.applied(
                            at("user"),
                            "non_root_user",
                            format!("runs as {user}: {label}'s image allows it without root"),
                        );
                    }
                    // The catalog knows it needs root to start and drops it itself.
                    Some(_) => {}
                    None => self.advice(
                        at("user"),
                        "non_root_user",
                        "run as a non-root user (user: \"1000:1000\") if the image allows it"
                            .to_owned(),
                    ),
                }
            }

            if !s.contains_key("read_only") {
                match template {
                    Some(t) => {
                        s.insert("read_only".into(), json!(true));
                        let paths: &[&str] = if t.tmpfs.is_empty() {
                            &["/tmp"]
                        } else {
                            t.tmpfs
                        };
                        let added = add_to_list(s, "tmpfs", paths);
                        let tmpfs = if added.is_empty() {
                            String::new()
                        } else {
                            format!(", with a tmpfs on {}", added.join(", "))
                        };
                        self.applied(
                            at("read_only"),
                            "read_only_root",
                            format!(
                                "read-only root filesystem{tmpfs}: an intruder cannot change \
                                 the image's files"
                            ),
                        );
                    }
                    None => self.advice(
                        at("read_only"),
                        "read_only_root",
                        "make the root filesystem read-only (read_only: true) with a tmpfs \
                         where the service writes"
                            .to_owned(),
                    ),
                }
            }

            if !s.contains_key("cap_drop") {
                let needed: Option<&[&str]> = match template {
                    // It starts as root and drops privileges itself: that needs capabilities.
                    Some(t) if t.user.is_some() && !document::runs_as_non_root(s) => None,
                    Some(t) => Some(t.cap_add),
                    None if document::runs_as_non_root(s) => Some(&[]),
                    None => None,
                };
                match needed {
                    Some(needed) => {
                        s.insert("cap_drop".into(), json!(["ALL"]));
                        let kept = add_to_list(s, "cap_add", needed);
                        let kept = if kept.is_empty() {
                            String::new()
                        } else {
                            format!(", kept {}", kept.join(", "))
                        };
                        self.applied(
                            at("cap_drop"),
                            "cap_drop",
                            format!("dropped every capability{kept}: the service needs no others"),
                        );
                    }
                    None => self.advice(
                        at("cap_drop"),
                        "cap_drop",
                        match template.and_then(|t| t.user) {
                            Some(user) => format!(
                                "run it as {user}, then drop every capability (cap_drop: [ALL]): \
                                 as root its entrypoint needs them to hand over to {user}"
                            ),
                            None => "drop capabilities (cap_drop: [ALL]) and add back only \
                                     those the service needs"
                                .to_owned(),
                        },
                    ),
                }
            }

            if !document::mentions_no_new_privileges(s) {
                add_to_list(s, "security_opt", &["no-new-privileges:true"]);
                self.applied(
                    at("security_opt"),
                    "no_new_privileges",
                    "no-new-privileges: a process cannot gain privileges through setuid \
                     binaries"
                        .to_owned(),
                );
            }
        }
    }
}

/// The mapping under `key`, made if absent (a non-mapping is replaced: it was invalid).
fn object<'a>(s: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = s.entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().unwrap_or_else(|| unreachable!())
}

/// Adds the items a list lacks (a single string becomes a list); returns those added.
fn add_to_list(s: &mut Map<String, Value>, key: &str, items: &[&str]) -> Vec<String> {
    let mut list: Vec<Value> = match s.get(key) {
        Some(Value::Array(list)) => list.clone(),
        Some(Value::String(one)) => vec![json!(one)],
        _ => Vec::new(),
    };
    let mut added = Vec::new();
    for item in items {
        if !list.iter().any(|v| v.as_str() == Some(item)) {
            list.push(json!(item));
            added.push((*item).to_owned());
        }
    }
    if !list.is_empty() {
        s.insert(key.to_owned(), Value::Array(list));
    }
    added
}

/// Optimizes a configuration for the goals (none: all). A document that is not a mapping, or
/// has no services, comes back unchanged.
pub fn optimize(config: &Value, goals: &OptimizationGoals) -> Optimized {
    let mut after = config.clone();
    let mut rules = Rules {
        goals,
        swarm: document::is_swarm_shaped(config),
        changes: Vec::new(),
    };
    if let Some(Value::Object(services)) = after.get_mut("services") {
        for (name, service) in services.iter_mut() {
            if let Value::Object(s) = service {
                rules.service(name, s);
            }
        }
    }
    let diff = diff(config, &after);
    Optimized {
        configuration: after,
        changes: rules.changes,
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EnvironmentType, GenerationRequest, SecurityLevel, TargetPlatform};
    use super::*;

    fn plain() -> Value {
        json!({
            "services": {
                "web": {"build": "./web", "ports": ["8000:8000"], "depends_on": ["db"]},
                "db": {
                    "image": "postgres",
                    "environment": {"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}"},
                    "volumes": ["pgdata:/var/lib/postgresql/data"],
                },
                "cache": {"image": "redis:latest"},
            },
            "volumes": {"pgdata": {}},
        })
    }

    fn applied(optimized: &Optimized) -> Vec<(String, String)> {
        optimized
            .changes
            .iter()
            .filter(|c| c.applied)
            .map(|c| (c.path.clone(), c.rule.clone()))
            .collect()
    }

    #[test]
    fn optimizing_lists_its_changes_and_a_diff() {
        let optimized = optimize(&plain(), &OptimizationGoals::all());
        let applied = applied(&optimized);
        for (path, rule) in [
            ("services.db.image", "pinned_tag"),
            ("services.db.healthcheck", "healthcheck"),
            ("services.db.deploy.resources.limits", "resource_limits"),
            ("services.db.restart", "restart_policy"),
            ("services.db.user", "non_root_user"),
            ("services.db.read_only", "read_only_root"),
            ("services.db.cap_drop", "cap_drop"),
            ("services.db.security_opt", "no_new_privileges"),
            ("services.db.shm_size", "shm_size"),
            ("services.cache.image", "pinned_tag"),
            ("services.web.logging", "log_rotation"),
        ] {
            assert!(
                applied.contains(&(path.to_owned(), rule.to_owned())),
                "{path} {rule} missing from {applied:?}"
            );
        }
        let c = &optimized.configuration;
        assert_eq!(c["services"]["db"]["image"], "postgres:16.4");
        assert_eq!(c["services"]["cache"]["image"], "redis:7.4.1");
        assert_eq!(
            c["services"]["db"]["healthcheck"]["test"][0], "CMD-SHELL",
            "{c:#}"
        );
        assert!(
            c["services"]["db"]["healthcheck"]["test"][1]
                .as_str()
                .unwrap()
                .starts_with("pg_isready")
        );
        assert_eq!(
            c["services"]["cache"]["healthcheck"]["test"],
            json!(["CMD", "redis-cli", "ping"])
        );
        assert_eq!(
            c["services"]["db"]["tmpfs"],
            json!(["/tmp", "/var/run/postgresql"])
        );
        // The diff is unified, over YAML.
        assert!(
            optimized.diff.starts_with("--- before\n+++ after\n"),
            "{}",
            optimized.diff
        );
        assert!(
            optimized.diff.contains("-    image: postgres\n"),
            "{}",
            optimized.diff
        );
        assert!(
            optimized.diff.contains("+    image: postgres:16.4\n"),
            "{}",
            optimized.diff
        );
    }

    #[test]
    fn what_cannot_be_done_safely_to_an_unknown_image_is_advice_only() {
        let optimized = optimize(&plain(), &OptimizationGoals::all());
        let web = &optimized.configuration["services"]["web"];
        assert!(web.get("read_only").is_none());
        assert!(web.get("cap_drop").is_none());
        assert!(web.get("user").is_none());
        assert!(web.get("healthcheck").is_none());
        let advice: Vec<&str> = optimized
            .changes
            .iter()
            .filter(|c| !c.applied && c.path.starts_with("services.web."))
            .map(|c| c.rule.as_str())
            .collect();
        assert_eq!(
            advice,
            ["healthcheck", "non_root_user", "read_only_root", "cap_drop"]
        );
        let unknown = optimize(
            &json!({"services": {"app": {"image": "acme/app"}}}),
            &OptimizationGoals::all(),
        );
        let pin = unknown
            .changes
            .iter()
            .find(|c| c.rule == "pinned_tag")
            .unwrap();
        assert!(!pin.applied);
        assert_eq!(
            unknown.configuration["services"]["app"]["image"],
            "acme/app"
        );
    }

    #[test]
    fn optimizing_an_optimized_configuration_changes_nothing() {
        let generated = super::super::generate(&GenerationRequest {
            description: "a Node app with MySQL and Memcached behind nginx".to_owned(),
            target_platform: TargetPlatform::DockerSwarm,
            environment_type: EnvironmentType::Development,
            resource_constraints: None,
            security_level: SecurityLevel::Basic,
        });
        for config in [plain(), generated.configuration] {
            let once = optimize(&config, &OptimizationGoals::all());
            assert!(!applied(&once).is_empty());
            let twice = optimize(&once.configuration, &OptimizationGoals::all());
            assert_eq!(twice.configuration, once.configuration);
            assert_eq!(applied(&twice), Vec::<(String, String)>::new());
            assert_eq!(twice.diff, "");
        }
    }

    #[test]
    fn every_generated_shape_optimizes_once_and_then_stays_put() {
        for description in [
            "a Django app with PostgreSQL and Redis behind nginx",
            "an Express API with MongoDB and RabbitMQ behind Traefik",
            "a Spring Boot service with MariaDB and Memcached behind Caddy",
        ] {
            for platform in [
                TargetPlatform::Docker,
                TargetPlatform::DockerSwarm,
                TargetPlatform::Kubernetes,
            ] {
                for environment in [EnvironmentType::Development, EnvironmentType::Production] {
                    for security in [SecurityLevel::Basic, SecurityLevel::High] {
                        let config = super::super::generate(&GenerationRequest {
                            description: description.to_owned(),
                            target_platform: platform,
                            environment_type: environment,
                            resource_constraints: None,
                            security_level: security,
                        })
                        .configuration;
                        let once = optimize(&config, &OptimizationGoals::all());
                        let twice = optimize(&once.configuration, &OptimizationGoals::all());
                        assert_eq!(
                            applied(&twice),
                            Vec::<(String, String)>::new(),
                            "{description} {platform:?} {environment:?} {security:?}"
                        );
                        assert_eq!(twice.configuration, once.configuration);
                    }
                }
            }
        }
    }

    #[test]
    fn goals_choose_the_rules() {
        let security = optimize(
            &plain(),
            &OptimizationGoals {
                goals: vec![Goal::Security],
            },
        );
        let rules: Vec<&str> = security.changes.iter().map(|c| c.rule.as_str()).collect();
        assert!(rules.contains(&"cap_drop"));
        assert!(!rules.contains(&"healthcheck"));
        assert!(!rules.contains(&"resource_limits"));
        let cost: OptimizationGoals =
            serde_json::from_value(json!({"goals": ["resources"]})).unwrap();
        assert_eq!(cost.goals, [Goal::Cost]);
        let limits = optimize(&plain(), &cost);
        assert!(
            limits
                .changes
                .iter()
                .all(|c| matches!(c.rule.as_str(), "resource_limits" | "log_rotation"))
        );
        assert!(!limits.changes.is_empty());
    }

    #[test]
    fn a_swarm_shaped_document_gets_its_restart_policy_in_deploy() {
        let config =
            json!({"services": {"db": {"image": "postgres:16.4", "deploy": {"replicas": 1}}}});
        let optimized = optimize(&config, &OptimizationGoals::all());
        let db = &optimized.configuration["services"]["db"];
        assert!(db.get("restart").is_none());
        assert_eq!(db["deploy"]["restart_policy"]["condition"], "any");
        assert_eq!(db["deploy"]["replicas"], 1);
    }

    #[test]
    fn what_a_service_already_says_is_kept() {
        let config = json!({"services": {"db": {
            "image": "postgres:15.8",
            "read_only": false,
            "user": "root",
            "healthcheck": {"disable": true},
            "restart": "always",
            "security_opt": ["no-new-privileges:false"],
            "tmpfs": "/run",
            "mem_limit": "2g",
        }}});
        let optimized = optimize(&config, &OptimizationGoals::all());
        let db = &optimized.configuration["services"]["db"];
        for (key, value) in config["services"]["db"].as_object().unwrap() {
            assert_eq!(&db[key], value, "{key} was changed");
        }
        let rules: Vec<&str> = optimized.changes.iter().map(|c| c.rule.as_str()).collect();
        assert_eq!(rules, ["shm_size", "log_rotation", "cap_drop"]);
    }

    #[test]
    fn a_document_without_services_comes_back_unchanged() {
        for config in [json!("text"), json!({}), json!({"services": []})] {
            let optimized = optimize(&config, &OptimizationGoals::all());
            assert_eq!(optimized.configuration, config);
            assert!(optimized.changes.is_empty());
            assert_eq!(optimized.diff, "");
        }
    }
}

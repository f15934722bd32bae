//! Reading a compose document held as JSON: images, environments, ports, users, the words of
//! secret names. Lenient: what is malformed is skipped (validation is `compose.rs`'s job).

use serde_json::{Map, Value};

/// An image reference split into its parts: `registry/repo:tag@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef<'a> {
    /// Everything before the tag: `docker.io/library/postgres`.
    pub name: &'a str,
    /// The tag, if any.
    pub tag: Option<&'a str>,
    /// Whether a digest pins it.
    pub digest: bool,
}

impl<'a> ImageRef<'a> {
    /// Splits `raw`; a port in the registry (`localhost:5000/app`) is not a tag.
    pub fn parse(raw: &'a str) -> Self {
        let (rest, digest) = match raw.split_once('@') {
            Some((rest, _)) => (rest, true),
            None => (raw, false),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[slash..].rfind(':') {
            Some(colon) => Self {
                name: &rest[..slash + colon],
                tag: Some(&rest[slash + colon + 1..]),
                digest,
            },
            None => Self {
                name: rest,
                tag: None,
                digest,
            },
        }
    }

    /// The repository without a registry or `library/`: `postgres`, `bitnami/redis`.
    pub fn repository(&self) -> &'a str {
        let mut name = self.name;
        for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
            if let Some(rest) = name.strip_prefix(prefix) {
                name = rest;
            }
        }
        name.strip_prefix("library/").unwrap_or(name)
    }

    /// Pinned: a digest, or a tag other than `latest`.
    pub fn is_pinned(&self) -> bool {
        self.digest || self.tag.is_some_and(|t| t != "latest")
    }

    /// Whether it is written with interpolation (`${IMAGE}`): nothing can be said of it.
    pub fn is_interpolated(raw: &str) -> bool {
        raw.contains('$')
    }
}

/// The services in document order (sorted by name: JSON mappings here are ordered maps).
pub(crate) fn services(config: &Value) -> Vec<(&str, &Map<String, Value>)> {
    config
        .get("services")
        .and_then(Value::as_object)
        .map(|services| {
            services
                .iter()
                .filter_map(|(name, service)| service.as_object().map(|s| (name.as_str(), s)))
                .collect()
        })
        .unwrap_or_default()
}

/// A service's image, if it names one as a string.
pub(crate) fn image(service: &Map<String, Value>) -> Option<&str> {
    service.get("image").and_then(Value::as_str)
}

/// A service's environment as `(key, value, path)`, from the map or the list form.
pub(crate) fn environment(
    name: &str,
    service: &Map<String, Value>,
) -> Vec<(String, Option<String>, String)> {
    match service.get("environment") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                (
                    key.clone(),
                    value,
                    format!("services.{name}.environment.{key}"),
                )
            })
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item = item.as_str()?;
                let (key, value) = match item.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                    None => (item.to_owned(), None),
                };
                Some((key, value, format!("services.{name}.environment[{i}]")))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether an environment variable's name says it holds a secret.
pub(crate) fn is_secret_name(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            matches!(
                word,
                "PASSWORD"
                    | "PASSWD"
                    | "PASS"
                    | "PWD"
                    | "SECRET"
                    | "TOKEN"
                    | "KEY"
                    | "APIKEY"
                    | "PRIVATE"
                    | "CREDENTIALS"
            )
        })
        || upper.ends_with("PASSWORD")
        || upper.ends_with("SECRET")
        || upper.ends_with("TOKEN")
}

/// Whether a value is a literal (not `${VAR}` interpolation, not empty, not a `*_FILE` path).
pub(crate) fn is_literal(value: &str) -> bool {
    !value.is_empty() && !value.contains('$')
}

/// One published port: the host IP if bound to one, the host port, the container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
    pub container_port: String,
    pub path: String,
}

impl Published {
    /// Whether only this machine can reach it.
    pub fn is_loopback(&self) -> bool {
        self.host_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("127.") || ip == "::1" || ip == "[::1]")
    }
}

/// A service's published ports, short (`"127.0.0.1:5432:5432/tcp"`) and long forms.
pub(crate) fn ports(name: &str, service: &Map<String, Value>) -> Vec<Published> {
    let Some(Value::Array(list)) = service.get("ports") else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, port)| {
            let path = format!("services.{name}.ports[{i}]");
            match port {
                Value::Number(n) => Some(Published {
                    host_ip: None,
                    host_port: None,
                    container_port: n.to_string(),
                    path,
                }),
                Value::String(s) => {
                    let s = s.split('/').next().unwrap_or(s);
                    // IPv6 host IPs are bracketed: split after the closing bracket.
                    let (ip, rest) = match s.strip_prefix('[') {
                        Some(after) => {
                            let (ip, rest) = after.split_once(']')?;
                            (Some(ip.to_owned()), rest.trim_start_matches(':'))
                        }
                        None => (None, s),
                    };
                    let parts: Vec<&str> = rest.split(':').collect();
                    let (host_ip, host_port, container) = match (ip, parts.as_slice()) {
                        (ip, [container]) => (ip, None, *container),
                        (None, [host, container]) => (None, Some(*host), *container),
                        (Some(ip), [host, container]) => (Some(ip), Some(*host), *container),
                        (None, [ip, host, container]) => {
                            (Some((*ip).to_owned()), Some(*host), *container)
                        }
                        _ => return None,
                    };
                    Some(Published {
                        host_ip: host_ip.filter(|ip| !ip.is_empty()),
                        host_port: host_port.filter(|p| !p.is_empty()).map(str::to_owned),
                        container_port: container.to_owned(),
                        path,
                    })
                }
                Value::Object(long) => Some(Published {
                    host_ip: long
                        .get("host_ip")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    host_port: long.get("published").map(|p| match p {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                    container_port: long
                        .get("target")
                        .map(|p| match p {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default(),
                    path,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Whether a service runs as a user other than root.
pub(crate) fn runs_as_non_root(service: &Map<String, Value>) -> bool {
    match service.get("user") {
        Some(Value::String(user)) => {
            let who = user.split(':').next().unwrap_or(user);
            !who.is_empty() && who != "root" && who != "0"
        }
        Some(Value::Number(n)) => n.as_u64() != Some(0),
        _ => false,
    }
}

/// Whether a service declares resource limits (`deploy.resources.limits`, `mem_limit`, `cpus`).
pub(crate) fn has_limits(service: &Map<String, Value>) -> bool {
    service.contains_key("mem_limit")
        || service.contains_key("cpus")
        || service
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("limits"))
            .and_then(Value::as_object)
            .is_some_and(|limits| !limits.is_empty())
}

/// Whether a service says how it restarts (`restart` or `deploy.restart_policy`).
pub(crate) fn has_restart_policy(service: &Map<String, Value>) -> bool {
    service.contains_key("restart")
        || service
            .get("deploy")
            .and_then(|d| d.get("restart_policy"))
            .is_some()
}

/// Whether `security_opt` says anything about `no-new-privileges`.
pub(crate) fn mentions_no_new_privileges(service: &Map<String, Value>) -> bool {
    service
        .get("security_opt")
        .and_then(Value::as_array)
        .is_some_and(|opts| {
            opts.iter()
                .filter_map(Value::as_str)
                .any(|o| o.starts_with("no-new-privileges"))
        })
}

/// Whether the document looks written for swarm (services with `deploy.replicas`, `mode`,
/// `placement` or `update_config`): its restart policy then belongs in `deploy`.
pub(crate) fn is_swarm_shaped(config: &Value) -> bool {
    services(config).iter().any(|(_, service)| {
        service
            .get("deploy")
            .and_then(Value::as_object)
            .is_some_and(|d| {
                ["replicas", "mode", "placement", "update_config"]
                    .iter()
                    .any(|k| d.contains_key(*k))
            })
    })
}

/// The source of each volume a service mounts, with its path: named volumes and bind mounts.
pub(crate) fn volume_sources(name: &str, service: &Map<String, Value>) -> Vec<(String, String)> {
    let Some(Value::Array(list)) = service.get("volumes") else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, volume)| {
            let source = match volume {
                Value::String(s) => {
                    let mut parts = s.split(':');
                    let first = parts.next()?;
                    // A single part is an anonymous volume: no source.
                    parts.next()?;
                    first.to_owned()
                }
                Value::Object(long) => long.get("source")?.as_str()?.to_owned(),
                _ => return None,
            };
            Some((source, format!("services.{name}.volumes[{i}]")))
        })
        .collect()
}

/// Whether a volume source is a path on the host (a bind mount), not a named volume.
#[cfg(test)]
pub(crate) fn is_bind_source(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_image_reference_splits_into_name_tag_and_digest() {
        let plain = ImageRef::parse("postgres");
        assert_eq!(
            (plain.name, plain.tag, plain.is_pinned()),
            ("postgres", None, false)
        );
        let latest = ImageRef::parse("docker.io/library/redis:latest");
        assert_eq!(latest.repository(), "redis");
        assert!(!latest.is_pinned());
        let registry = ImageRef::parse("localhost:5000/team/app");
        assert_eq!(
            (registry.name, registry.tag),
            ("localhost:5000/team/app", None)
        );
        let pinned = ImageRef::parse("localhost:5000/app:1.2@sha256:abc");
        assert_eq!(pinned.tag, Some("1.2"));
        assert!(pinned.digest && pinned.is_pinned());
    }

    #[test]
    fn secret_names_are_recognized_by_their_words() {
        for key in [
            "POSTGRES_PASSWORD",
            "DJANGO_SECRET_KEY",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "DBPASSWORD",
        ] {
            assert!(is_secret_name(key), "{key}");
        }
        for key in ["POSTGRES_USER", "DATABASE_URL", "KEYBOARD_LAYOUT", "PATH"] {
            assert!(!is_secret_name(key), "{key}");
        }
    }

    #[test]
    fn ports_read_the_short_and_long_forms() {
        let service = json!({"ports": [
            "5432:5432", "127.0.0.1:6379:6379", "[::1]:80:80/tcp", "9000", 8080,
            {"target": 3000, "published": "3001", "host_ip": "0.0.0.0"}
        ]});
        let ports = ports("db", service.as_object().unwrap());
        assert_eq!(ports.len(), 6);
        assert_eq!(ports[0].host_port.as_deref(), Some("5432"));
        assert!(!ports[0].is_loopback());
        assert!(ports[1].is_loopback());
        assert!(ports[2].is_loopback());
        assert_eq!(ports[3].host_port, None);
        assert_eq!(ports[5].host_port.as_deref(), Some("3001"));
        assert_eq!(ports[5].path, "services.db.ports[5]");
    }
}

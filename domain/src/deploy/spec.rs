//! What a deployment runs: its spec (name, type, framework, repository, resources, target,
//! environment variables), parsed with the PaaS seed's rules, every violation reported at once.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::framework::{self, Framework};
use crate::value::{InvalidValue, invalid};

/// Shortest deployment name.
pub const MIN_NAME: usize = 3;
/// Longest deployment name.
pub const MAX_NAME: usize = 50;
/// Most environment variables of one deployment.
pub const MAX_ENV_VARS: usize = 200;
/// Longest environment variable name, in bytes.
pub const MAX_ENV_NAME: usize = 255;
/// Longest environment variable value, in bytes.
pub const MAX_ENV_VALUE: usize = 32 * 1024;

/// A deployment's name: 3 to 50 of `A-Z a-z 0-9 _ -`, unique within its organization (without
/// case: [`DeploymentName::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentName(String);

impl DeploymentName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let len = raw.len();
        if !(MIN_NAME..=MAX_NAME).contains(&len)
            || !raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "name",
                "must be 3 to 50 characters: letters, digits, hyphens and underscores",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes it unique: its lowercase form.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// What a deployment runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    /// A virtual machine.
    Vm,
    /// An LXC container.
    Lxc,
}

/// An inclusive range of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU cores.
    pub cores: (u32, u32),
    /// Memory, in MB.
    pub memory: (u32, u32),
    /// Disk, in GB.
    pub disk: (u32, u32),
}

impl DeploymentType {
    /// Parses `vm` or `lxc`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "vm" => Ok(Self::Vm),
            "lxc" => Ok(Self::Lxc),
            _ => Err(invalid(
                "deployment_type",
                "Invalid deployment_type. Must be 'vm' or 'lxc'",
            )),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Lxc => "lxc",
        }
    }

    /// The resources it may have (the seed's ranges).
    pub fn limits(self) -> Limits {
        match self {
            Self::Vm => Limits {
                cores: (1, 16),
                memory: (512, 32768),
                disk: (10, 500),
            },
            Self::Lxc => Limits {
                cores: (1, 8),
                memory: (256, 16384),
                disk: (5, 200),
            },
        }
    }
}

/// A deployment's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores.
    pub cores: u32,
    /// Memory, in MB.
    pub memory: u32,
    /// Disk, in GB.
    pub disk: u32,
}

/// A repository on GitHub: `https://github.com/owner/repo`, stored in that canonical form (a
/// `.git` suffix or a trailing slash is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GithubUrl(String);

impl GithubUrl {
    /// Parses a GitHub repository URL.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let bad = || {
            invalid(
                "github_url",
                "Invalid GitHub URL: expected https://github.com/owner/repo",
            )
        };
        let rest = raw
            .trim()
            .strip_prefix("https://github.com/")
            .ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let rest = rest.strip_suffix(".git").unwrap_or(rest);
        let (owner, repo) = rest.split_once('/').ok_or_else(bad)?;
        // GitHub's rules: owners of letters, digits and inner hyphens (39 at most), repositories
        // of letters, digits, `.`, `_` and `-` (100 at most), never `.` or `..`.
        let owner_ok = (1..=39).contains(&owner.len())
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !owner.starts_with('-')
            && !owner.ends_with('-');
        let repo_ok = (1..=100).contains(&repo.len())
            && repo
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && repo != "."
            && repo != "..";
        if !owner_ok || !repo_ok {
            return Err(bad());
        }
        Ok(Self(format!("https://github.com/{owner}/{repo}")))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `owner/repo`.
    pub fn path(&self) -> &str {
        self.0.trim_start_matches("https://github.com/")
    }
}

/// An environment variable's name: a letter or `_`, then letters, digits and `_`. `PORT`,
/// `HOST` and `ATELIER_…` are the platform's.
fn env_name(raw: &str) -> Result<String, String> {
    let mut bytes = raw.bytes();
    let first_ok = matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'));
    if !first_ok
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || raw.len() > MAX_ENV_NAME
    {
        return Err(format!(
            "{raw:?} is not a variable name: a letter or `_`, then letters, digits and `_`, at \
             most {MAX_ENV_NAME} bytes"
        ));
    }
    if raw == "PORT" || raw == "HOST" || raw.starts_with("ATELIER_") {
        return Err(format!(
            "{raw} is set by the platform (PORT, HOST and ATELIER_… are reserved)"
        ));
    }
    Ok(raw.to_owned())
}

/// One environment variable as events hold it: a plain value, or a secret's reference (the
/// value lives in the secret vault beside the log, never in an event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value, for a plain variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For a secret: the vault entry holding its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<Uuid>,
}

impl EnvVar {
    /// Whether its value is secret.
    pub fn is_secret(&self) -> bool {
        self.secret_ref.is_some()
    }
}

/// One environment variable as input gives it: a secret's value is still here, and goes to
/// the vault before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvInput {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Whether the value is secret.
    pub secret: bool,
}

/// Parses environment variables, each error naming its variable (`env.NAME`).
pub fn parse_env(vars: &[(String, String, bool)], errors: &mut Vec<InvalidValue>) -> Vec<EnvInput> {
    if vars.len() > MAX_ENV_VARS {
        errors.push(invalid("env", format!("at most {MAX_ENV_VARS} variables")));
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (name, value, secret) in vars {
        match env_name(name) {
            Err(message) => errors.push(invalid("env", message)),
            Ok(name) if !seen.insert(name.clone()) => {
                errors.push(invalid("env", format!("{name} is given twice")));
            }
            Ok(name) => {
                if value.len() > MAX_ENV_VALUE {
                    errors.push(invalid(
                        "env",
                        format!("the value of {name} is longer than {MAX_ENV_VALUE} bytes"),
                    ));
                } else if value.contains('\0') {
                    errors.push(invalid(
                        "env",
                        format!("the value of {name} contains a NUL character"),
                    ));
                } else {
                    out.push(EnvInput {
                        name,
                        value: value.clone(),
                        secret: *secret,
                    });
                }
            }
        }
    }
    out
}

/// What a deployment runs, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    /// Its name.
    pub name: DeploymentName,
    /// VM or LXC.
    pub deployment_type: DeploymentType,
    /// Its framework's key ([`STACK_FRAMEWORK`] for a stack).
    pub framework: String,
    /// Its repository (`None`: a stack's deployment, which has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_url: Option<GithubUrl>,
    /// Its resources.
    pub resources: Resources,
    /// The target (WindFlow's environment) it deploys to.
    #[serde(default)]
    pub target_id: Option<Uuid>,
    /// Its environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// The stack version it runs, for a stack's deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackSource>,
}

/// The framework key of a stack's deployment: it runs a compose document, not one app.
pub const STACK_FRAMEWORK: &str = "compose";

/// A stack version a deployment runs (WindFlow: a stack deployed to a target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSource {
    /// The stack.
    pub stack_id: Uuid,
    /// Its configuration's version.
    pub version: u32,
    /// Its services, as that version names them.
    pub services: Vec<String>,
}

impl DeploymentSpec {
    /// The spec of a stack version's deployment: no repository, no framework of the catalog.
    pub fn for_stack(
        name: DeploymentName,
        resources: Resources,
        target_id: Option<Uuid>,
        stack: StackSource,
    ) -> Self {
        Self {
            name,
            deployment_type: DeploymentType::Vm,
            framework: STACK_FRAMEWORK.to_owned(),
            github_url: None,
            resources,
            target_id,
            env: Vec::new(),
            stack: Some(stack),
        }
    }

    /// Its framework (a spec holds only catalog keys; `None` for one removed since).
    pub fn framework(&self) -> Option<&'static Framework> {
        framework::framework(&self.framework)
    }
}

/// A spec as a create request gives it, fields unparsed (`None`: missing).
#[derive(Debug, Clone, Default)]
pub struct SpecInput<'a> {
    /// The name.
    pub name: Option<&'a str>,
    /// `vm` or `lxc`.
    pub deployment_type: Option<&'a str>,
    /// A catalog key.
    pub framework: Option<&'a str>,
    /// The repository.
    pub github_url: Option<&'a str>,
    /// Cores, memory (MB), disk (GB), as given.
    pub cores: Option<i64>,
    /// Memory in MB.
    pub memory: Option<i64>,
    /// Disk in GB.
    pub disk: Option<i64>,
    /// The target.
    pub target_id: Option<Uuid>,
}

/// A parsed spec, its variables not yet in the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSpec {
    /// The name.
    pub name: DeploymentName,
    /// The type.
    pub deployment_type: DeploymentType,
    /// The framework.
    pub framework: &'static Framework,
    /// The repository.
    pub github_url: GithubUrl,
    /// The resources.
    pub resources: Resources,
    /// The target.
    pub target_id: Option<Uuid>,
}

fn in_range(
    field: &'static str,
    value: Option<i64>,
    range: Option<(u32, u32)>,
    unit: &str,
    kind: Option<DeploymentType>,
    errors: &mut Vec<InvalidValue>,
) -> Option<u32> {
    let Some(value) = value else {
        errors.push(invalid(field, "is required"));
        return None;
    };
    match (range, kind) {
        (Some((lo, hi)), Some(kind)) if value < i64::from(lo) || value > i64::from(hi) => {
            errors.push(invalid(
                field,
                format!(
                    "must be {lo}-{hi}{unit} for {}",
                    kind.as_str().to_uppercase()
                ),
            ));
            None
        }
        _ if value < 1 || value > i64::from(u32::MAX) => {
            errors.push(invalid(field, "must be a positive number"));
            None
        }
        _ => u32::try_from(value).ok(),
    }
}

impl SpecInput<'_> {
    /// Parses the spec with the seed's rules; every violation is reported.
    pub fn parse(&self) -> Result<ParsedSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let required = |field: &'static str, errors: &mut Vec<InvalidValue>| {
            errors.push(invalid(field, "is required"));
        };
        let name = match self.name {
            Some(n) => DeploymentName::parse(n).map_err(|e| errors.push(e)).ok(),
            None => {
                required("name", &mut errors);
                None
            }
        };
        let kind = match self.deployment_type {
            Some(t) => DeploymentType::parse(t).map_err(|e| errors.push(e)).ok(),
            None => {
                required("deployment_type", &mut errors);
                None
            }
        };
        let framework = match self.framework {
            Some(f) => framework::framework(f).or_else(|| {
                errors.push(invalid(
                    "framework",
                    format!(
                        "Unsupported framework {f:?}: must be one of {}",
                        framework::keys()
                    ),
                ));
                None
            }),
            None => {
                required("framework", &mut errors);
                None
            }
        };
        let github_url = match self.github_url {
            Some(u) => GithubUrl::parse(u).map_err(|e| errors.push(e)).ok(),
            None => {
                required("github_url", &mut errors);
                None
            }
        };
        let limits = kind.map(DeploymentType::limits);
        let cores = in_range(
            "resources.cores",
            self.cores,
            limits.map(|l| l.cores),
            "",
            kind,
            &mut errors,
        );
        let memory = in_range(
            "resources.memory",
            self.memory,
            limits.map(|l| l.memory),
            " MB",
            kind,
            &mut errors,
        );
        let disk = in_range(
            "resources.disk",
            self.disk,
            limits.map(|l| l.disk),
            " GB",
            kind,
            &mut errors,
        );
        match (name, kind, framework, github_url, cores, memory, disk) {
            (
                Some(name),
                Some(deployment_type),
                Some(framework),
                Some(github_url),
                Some(cores),
                Some(memory),
                Some(disk),
            ) if errors.is_empty() => Ok(ParsedSpec {
                name,
                deployment_type,
                framework,
                github_url,
                resources: Resources {
                    cores,
                    memory,
                    disk,
                },
                target_id: self.target_id,
            }),
            _ => Err(errors),
        }
    }
}

impl ParsedSpec {
    /// The spec as recorded, with its variables as the vault gave them back.
    pub fn with_env(self, env: Vec<EnvVar>) -> DeploymentSpec {
        DeploymentSpec {
            name: self.name,
            deployment_type: self.deployment_type,
            framework: self.framework.key.to_owned(),
            github_url: Some(self.github_url),
            resources: self.resources,
            target_id: self.target_id,
            env,
            stack: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_example() -> SpecInput<'static> {
        SpecInput {
            name: Some("mon-application"),
            deployment_type: Some("vm"),
            framework: Some("django"),
            github_url: Some("https://github.com/username/repository"),
            cores: Some(2),
            memory: Some(2048),
            disk: Some(20),
            target_id: None,
        }
    }

    fn fields(errors: &[InvalidValue]) -> Vec<&'static str> {
        errors.iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_seeds_example_is_a_valid_spec() {
        let spec = seed_example().parse().unwrap();
        assert_eq!(spec.name.as_str(), "mon-application");
        assert_eq!(spec.deployment_type, DeploymentType::Vm);
        assert_eq!(spec.framework.key, "django");
        assert_eq!(
            spec.resources,
            Resources {
                cores: 2,
                memory: 2048,
                disk: 20
            }
        );
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let errors = SpecInput {
            name: Some("ab"),
            deployment_type: Some("docker"),
            framework: Some("cobol"),
            github_url: Some("https://gitlab.com/a/b"),
            cores: None,
            memory: Some(0),
            disk: Some(-1),
            target_id: None,
        }
        .parse()
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "name",
                "deployment_type",
                "framework",
                "github_url",
                "resources.cores",
                "resources.memory",
                "resources.disk"
            ]
        );
        assert_eq!(
            errors[1].message,
            "Invalid deployment_type. Must be 'vm' or 'lxc'"
        );
    }

    #[test]
    fn resources_are_bounded_by_the_deployment_type() {
        let vm = |cores, memory, disk| SpecInput {
            cores: Some(cores),
            memory: Some(memory),
            disk: Some(disk),
            ..seed_example()
        };
        let lxc = |cores, memory, disk| SpecInput {
            deployment_type: Some("lxc"),
            ..vm(cores, memory, disk)
        };
        assert!(vm(16, 32768, 500).parse().is_ok());
        assert!(vm(1, 512, 10).parse().is_ok());
        assert_eq!(
            fields(&vm(17, 511, 501).parse().unwrap_err()),
            ["resources.cores", "resources.memory", "resources.disk"]
        );
        assert!(lxc(8, 256, 5).parse().is_ok());
        assert!(lxc(1, 16384, 200).parse().is_ok());
        let errors = lxc(9, 16385, 4).parse().unwrap_err();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].message, "must be 1-8 for LXC");
        assert_eq!(errors[1].message, "must be 256-16384 MB for LXC");
    }

    #[test]
    fn names_follow_the_seeds_rule() {
        for ok in ["abc", "my_app-2", &"a".repeat(50)] {
            assert!(DeploymentName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", &"a".repeat(51), "my app", "café", "a/b", ""] {
            assert!(DeploymentName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(DeploymentName::parse("My-App").unwrap().key(), "my-app");
    }

    #[test]
    fn only_github_repository_urls_are_accepted_in_their_canonical_form() {
        let ok = |raw| GithubUrl::parse(raw).unwrap().as_str().to_owned();
        assert_eq!(
            ok("https://github.com/user/repo"),
            "https://github.com/user/repo"
        );
        assert_eq!(
            ok("https://github.com/user/repo.git"),
            "https://github.com/user/repo"
        );
        assert_eq!(
            ok("https://github.com/user/my.repo/"),
            "https://github.com/user/my.repo"
        );
        for bad in [
            "http://github.com/user/repo",
            "https://github.com/user",
            "https://github.com/user/repo/tree/main",
            "https://github.com.evil.com/user/repo",
            "https://user@github.com/user/repo",
            "https://github.com/-user/repo",
            "https://github.com/user/..",
            "https://github.com/user/repo?x=1",
            "git@github.com:user/repo.git",
        ] {
            assert!(GithubUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_variables_are_named_once_and_leave_the_platforms_names_alone() {
        let mut errors = Vec::new();
        let vars = |list: &[(&str, &str, bool)]| -> Vec<(String, String, bool)> {
            list.iter()
                .map(|(n, v, s)| ((*n).to_owned(), (*v).to_owned(), *s))
                .collect()
        };
        let ok = parse_env(
            &vars(&[("DEBUG", "1", false), ("DB_PASSWORD", "hunter2", true)]),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(ok.len(), 2);
        assert!(ok[1].secret);
        parse_env(
            &vars(&[
                ("1X", "", false),
                ("PORT", "80", false),
                ("ATELIER_X", "", false),
                ("A", "1", false),
                ("A", "2", false),
                ("B", "a\0b", false),
            ]),
            &mut errors,
        );
        assert_eq!(errors.len(), 5);
        assert!(errors.iter().all(|e| e.field == "env"));
    }
}

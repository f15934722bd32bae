//! A factory project: a named repository, unique by name within its organization, with an
//! optional build command.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, DomainEvent};

/// Longest project name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest repository URL, in bytes.
pub const MAX_REPO_URL_LEN: usize = 2048;
/// Longest build command, in bytes.
pub const MAX_BUILD_COMMAND_LEN: usize = 4096;
/// The URL schemes a repository may use.
pub const REPO_SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

pub use crate::value::InvalidValue;
use crate::value::{folded, invalid, name_key, unique_name};

/// A project's name: NFKC-normalized, trimmed, 1 to 100 characters, no control, invisible or
/// bidirectional control characters ([`crate::value::unique_name`]); unique within its
/// organization by [`ProjectName::key`].
///
/// Values read back from events are taken as written (events are facts); input is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectName(String);

impl ProjectName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        unique_name("name", raw, 1, MAX_NAME_CHARS).map(Self)
    }

    /// The name as given (NFKC-normalized).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that makes names unique: case, inner spacing, compatibility forms and
    /// look-alike characters do not count ([`name_key`]).
    pub fn key(&self) -> String {
        name_key(&self.0)
    }

    /// The name as it sorts: without case, inner spacing collapsed ([`folded`]).
    pub fn sort_key(&self) -> String {
        folded(&self.0)
    }
}

/// A repository: an absolute URL in one of [`REPO_SCHEMES`] with a host (or a `file:` path), or
/// git's scp-like `user@host:path` (ssh). Remote helpers (`ext::…`, `fd::…`) and plain paths
/// are refused.
///
/// Whether it is on the server's own disk ([`RepoUrl::is_local`]: a `file:` URL) is told here;
/// whether that is allowed is the server's configuration, decided by the command layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoUrl(String);

/// git's `user@host:path`: user and host of `A-Z a-z 0-9 . _ -` (not starting with `-`, which
/// ssh would read as an option), a non-empty path.
fn is_scp_like(raw: &str) -> bool {
    let Some((user_host, path)) = raw.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    word(user) && word(host) && !path.is_empty() && !path.starts_with(':')
}

impl RepoUrl {
    /// Parses a repository URL from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(invalid("repo", "must not be empty"));
        }
        if raw.len() > MAX_REPO_URL_LEN {
            return Err(invalid(
                "repo",
                format!("must be at most {MAX_REPO_URL_LEN} bytes"),
            ));
        }
        // git reads `transport::address` as "run the remote helper `git-remote-transport`":
        // `ext::sh -c …` runs any command.
        if let Some(helper) = raw.find("::")
            && raw.find('/').is_none_or(|slash| helper < slash)
        {
            return Err(invalid(
                "repo",
                "must not name a git remote helper (`transport::address`)",
            ));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "repo",
                "must not contain spaces or control characters",
            ));
        }
        if !raw.contains("://") {
            if is_scp_like(raw) {
                return Ok(Self(raw.to_owned()));
            }
            return Err(invalid(
                "repo",
                "is not a repository URL: use https://, http://, ssh://, git:// or \
                 user@host:path (a path on the server's disk is a file:// URL, accepted only \
                 where the operator allows local repositories)",
            ));
        }
        let url =
            url::Url::parse(raw).map_err(|e| invalid("repo", format!("is not a URL: {e}")))?;
        if !REPO_SCHEMES.contains(&url.scheme()) {
            return Err(invalid(
                "repo",
                format!(
                    "scheme {:?} is not supported (use one of {})",
                    url.scheme(),
                    REPO_SCHEMES.join(", ")
                ),
            ));
        }
        if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("repo", "must name a host"));
        }
        if url.host_str().is_some_and(|h| h.starts_with('-')) || url.username().starts_with('-') {
            return Err(invalid(
                "repo",
                "must not have a host or user starting with `-`",
            ));
        }
        if url.password().is_some() {
            return Err(invalid(
                "repo",
                "must not carry a password (use a deploy key or token store instead)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the repository is on the server's own disk (a `file:` URL) rather than remote.
    pub fn is_local(&self) -> bool {
        self.0
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("file"))
    }
}

/// The shell command a build runs, 1 to 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildCommand(String);

impl BuildCommand {
    /// Parses a build command from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let cmd = raw.trim();
        if cmd.is_empty() {
            return Err(invalid(
                "build_command",
                "must not be empty (omit it instead)",
            ));
        }
        if cmd.len() > MAX_BUILD_COMMAND_LEN {
            return Err(invalid(
                "build_command",
                format!("must be at most {MAX_BUILD_COMMAND_LEN} bytes"),
            ));
        }
        if cmd.contains('\0') {
            return Err(invalid("build_command", "must not contain NUL"));
        }
        Ok(Self(cmd.to_owned()))
    }

    /// The command as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a live project holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: ProjectName,
    /// Its repository.
    pub repo_url: RepoUrl,
    /// Its build command.
    pub build_command: Option<BuildCommand>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The project aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Project {
    /// Never created.
    #[default]
    Absent,
    /// Created and not deleted.
    Active(ProjectData),
    /// Deleted; its id is never reused.
    Deleted {
        /// Its organization.
        org_id: Uuid,
    },
}

impl Project {
    /// The live project, if any.
    pub fn active(&self) -> Option<&ProjectData> {
        match self {
            Project::Active(p) => Some(p),
            _ => None,
        }
    }
}

/// What can be asked of a project. Every command names the organization it acts for: a project
/// of another organization is answered as not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectCommand {
    /// Create it.
    Create {
        /// Its id (chosen by the caller, UUIDv7).
        project_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name (unique within the organization: checked by a reservation).
        name: ProjectName,
        /// Its repository.
        repo_url: RepoUrl,
        /// Its build command.
        build_command: Option<BuildCommand>,
        /// When (the caller's clock: the domain reads none).
        at: DateTime<Utc>,
    },
    /// Replace its name, repository and build command.
    Update {
        /// The organization acting.
        org_id: Uuid,
        /// The new name.
        name: ProjectName,
        /// The new repository.
        repo_url: RepoUrl,
        /// The new build command (`None` removes it).
        build_command: Option<BuildCommand>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it.
    Delete {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProjectEvent {
    /// A project was created.
    ProjectCreated {
        /// Its id.
        project_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name.
        name: ProjectName,
        /// Its repository.
        repo_url: RepoUrl,
        /// Its build command.
        #[serde(default)]
        build_command: Option<BuildCommand>,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// Its name, repository or build command changed; the event carries what changed, so the
    /// log says "renamed" without a reader folding the project (schema 2; schema 1 carried all
    /// three as they then were, see [`PROJECT_UPCASTERS`]).
    ProjectUpdated {
        /// Its id.
        project_id: Uuid,
        /// The new name, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<ProjectName>,
        /// The new repository, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo_url: Option<RepoUrl>,
        /// The new build command, if it changed (`Some(None)`, written `null`: removed).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        build_command: Option<Option<BuildCommand>>,
        /// When.
        updated_at: DateTime<Utc>,
    },
    /// It was deleted.
    ProjectDeleted {
        /// Its id.
        project_id: Uuid,
        /// When.
        deleted_at: DateTime<Utc>,
    },
}

impl DomainEvent for ProjectEvent {
    const SCHEMA_VERSION: u32 = 2;
    const UPCASTERS: &'static [crate::Upcaster] = PROJECT_UPCASTERS;
}

/// Schema 1 → 2: a `ProjectUpdated` carried the name, repository and build command as they
/// then were, an absent build command meaning none. In schema 2 an absent field is unchanged,
/// so the old event says "set all three", its missing build command an explicit `null`.
pub const PROJECT_UPCASTERS: &[crate::Upcaster] = &[crate::Upcaster {
    event_type: "ProjectUpdated",
    from: 1,
    upcast: |data| {
        data.entry("build_command")
            .or_insert(serde_json::Value::Null);
    },
}];

/// A field that is present, even as `null` (`Some(None)`), against one that is absent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Why a project command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// A project with this id exists (or existed).
    #[error("the project already exists")]
    AlreadyExists,
    /// No such project in this organization.
    #[error("the project does not exist")]
    NotFound,
}

impl Aggregate for Project {
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;
    const CATEGORY: &'static str = "project";

    fn decide(&self, command: ProjectCommand) -> Result<Vec<ProjectEvent>, ProjectError> {
        match (self, command) {
            (
                Project::Absent,
                ProjectCommand::Create {
                    project_id,
                    org_id,
                    name,
                    repo_url,
                    build_command,
                    at,
                },
            ) => Ok(vec![ProjectEvent::ProjectCreated {
                project_id,
                org_id,
                name,
                repo_url,
                build_command,
                created_at: at,
            }]),
            (_, ProjectCommand::Create { .. }) => Err(ProjectError::AlreadyExists),
            (
                Project::Active(p),
                ProjectCommand::Update {
                    org_id,
                    name,
                    repo_url,
                    build_command,
                    at,
                },
            ) if p.org_id == org_id => {
                if p.name == name && p.repo_url == repo_url && p.build_command == build_command {
                    return Ok(vec![]);
                }
                Ok(vec![ProjectEvent::ProjectUpdated {
                    project_id: p.id,
                    name: (p.name != name).then_some(name),
                    repo_url: (p.repo_url != repo_url).then_some(repo_url),
                    build_command: (p.build_command != build_command).then_some(build_command),
                    updated_at: at,
                }])
            }
            (Project::Active(p), ProjectCommand::Delete { org_id, at }) if p.org_id == org_id => {
                Ok(vec![ProjectEvent::ProjectDeleted {
                    project_id: p.id,
                    deleted_at: at,
                }])
            }
            (_, ProjectCommand::Update { .. } | ProjectCommand::Delete { .. }) => {
                Err(ProjectError::NotFound)
            }
        }
    }

    fn evolve(self, event: &ProjectEvent) -> Self {
        match (self, event) {
            (
                _,
                ProjectEvent::ProjectCreated {
                    project_id,
                    org_id,
                    name,
                    repo_url,
                    build_command,
                    created_at,
                },
            ) => Project::Active(ProjectData {
                id: *project_id,
                org_id: *org_id,
                name: name.clone(),
                repo_url: repo_url.clone(),
                build_command: build_command.clone(),
                created_at: *created_at,
                updated_at: *created_at,
            }),
            (
                Project::Active(p),
                ProjectEvent::ProjectUpdated {
                    name,
                    repo_url,
                    build_command,
                    updated_at,
                    ..
                },
            ) => Project::Active(ProjectData {
                name: name.clone().unwrap_or(p.name),
                repo_url: repo_url.clone().unwrap_or(p.repo_url),
                build_command: match build_command {
                    Some(changed) => changed.clone(),
                    None => p.build_command,
                },
                updated_at: *updated_at,
                ..p
            }),
            (Project::Active(p), ProjectEvent::ProjectDeleted { .. }) => {
                Project::Deleted { org_id: p.org_id }
            }
            // Events that do not apply to the state leave it as it is.
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn org() -> Uuid {
        Uuid::from_u128(1)
    }
    fn other_org() -> Uuid {
        Uuid::from_u128(2)
    }
    fn id() -> Uuid {
        Uuid::from_u128(10)
    }
    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }
    fn t1() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_060, 0).unwrap()
    }
    fn name(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }
    fn repo(s: &str) -> RepoUrl {
        RepoUrl::parse(s).unwrap()
    }
    fn created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            project_id: id(),
            org_id: org(),
            name: name("Demo"),
            repo_url: repo("https://example.com/demo.git"),
            build_command: None,
            created_at: t0(),
        }
    }
    fn update(n: &str, cmd: Option<&str>) -> ProjectCommand {
        ProjectCommand::Update {
            org_id: org(),
            name: name(n),
            repo_url: repo("https://example.com/demo.git"),
            build_command: cmd.map(|c| BuildCommand::parse(c).unwrap()),
            at: t1(),
        }
    }

    #[test]
    fn a_new_project_is_created() {
        given::<Project>([])
            .when(ProjectCommand::Create {
                project_id: id(),
                org_id: org(),
                name: name("Demo"),
                repo_url: repo("https://example.com/demo.git"),
                build_command: None,
                at: t0(),
            })
            .then([created()]);
    }

    #[test]
    fn a_project_cannot_be_created_twice_even_after_deletion() {
        let create = ProjectCommand::Create {
            project_id: id(),
            org_id: org(),
            name: name("Demo"),
            repo_url: repo("https://example.com/demo.git"),
            build_command: None,
            at: t1(),
        };
        given::<Project>([created()])
            .when(create.clone())
            .then_error(ProjectError::AlreadyExists);
        given::<Project>([
            created(),
            ProjectEvent::ProjectDeleted {
                project_id: id(),
                deleted_at: t1(),
            },
        ])
        .when(create)
        .then_error(ProjectError::AlreadyExists);
    }

    #[test]
    fn an_update_records_the_new_values() {
        given::<Project>([created()])
            .when(update("Renamed", Some("make test")))
            .then([ProjectEvent::ProjectUpdated {
                project_id: id(),
                name: Some(name("Renamed")),
                repo_url: None,
                build_command: Some(Some(BuildCommand::parse("make test").unwrap())),
                updated_at: t1(),
            }]);
    }

    #[test]
    fn a_rename_records_the_name_alone_and_keeps_the_rest() {
        let g = given::<Project>([created()]);
        let g2 = given::<Project>([created()]);
        g.when(update("Renamed", None))
            .then([ProjectEvent::ProjectUpdated {
                project_id: id(),
                name: Some(name("Renamed")),
                repo_url: None,
                build_command: None,
                updated_at: t1(),
            }]);
        let renamed = g2.state().clone().evolve(&ProjectEvent::ProjectUpdated {
            project_id: id(),
            name: Some(name("Renamed")),
            repo_url: None,
            build_command: None,
            updated_at: t1(),
        });
        let p = renamed.active().unwrap();
        assert_eq!(p.name.as_str(), "Renamed");
        assert_eq!(p.repo_url.as_str(), "https://example.com/demo.git");
    }

    #[test]
    fn a_schema_1_update_is_read_as_setting_all_three_fields() {
        let v1 = serde_json::json!({
            "project_id": id(),
            "name": "Old name",
            "repo_url": "https://example.com/old.git",
            "updated_at": t1(),
        });
        let schema_1 = serde_json::json!({ "schema": 1 });
        let event = ProjectEvent::decode_stored("ProjectUpdated", &schema_1, &v1).unwrap();
        assert_eq!(
            event,
            ProjectEvent::ProjectUpdated {
                project_id: id(),
                name: Some(name("Old name")),
                repo_url: Some(repo("https://example.com/old.git")),
                // Absent in schema 1 meant "no build command": it removes the one there was.
                build_command: Some(None),
                updated_at: t1(),
            }
        );
        let before = given::<Project>([created()]).state().clone();
        let with_command = before.evolve(&ProjectEvent::ProjectUpdated {
            project_id: id(),
            name: None,
            repo_url: None,
            build_command: Some(Some(BuildCommand::parse("make").unwrap())),
            updated_at: t1(),
        });
        let after = with_command.evolve(&event);
        let p = after.active().unwrap();
        assert_eq!(p.build_command, None);
        assert_eq!(p.name.as_str(), "Old name");
        // Without metadata (the oldest events) the schema is 1 too; read as schema 2, the same
        // data would leave the build command alone.
        let no_meta = serde_json::json!({});
        assert_eq!(
            ProjectEvent::decode_stored("ProjectUpdated", &no_meta, &v1).unwrap(),
            event
        );
        let as_v2 =
            ProjectEvent::decode_stored("ProjectUpdated", &serde_json::json!({"schema": 2}), &v1)
                .unwrap();
        assert_ne!(as_v2, event);
    }

    #[test]
    fn an_event_from_a_newer_schema_is_refused_rather_than_guessed_at() {
        let data = serde_json::json!({ "project_id": id(), "deleted_at": t1() });
        let err =
            ProjectEvent::decode_stored("ProjectDeleted", &serde_json::json!({"schema": 3}), &data)
                .unwrap_err();
        assert!(err.reason.contains("newer"), "{err}");
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        given::<Project>([created()])
            .when(update("Demo", None))
            .then([]);
    }

    #[test]
    fn another_organization_cannot_see_or_touch_a_project() {
        given::<Project>([created()])
            .when(ProjectCommand::Delete {
                org_id: other_org(),
                at: t1(),
            })
            .then_error(ProjectError::NotFound);
        given::<Project>([created()])
            .when(ProjectCommand::Update {
                org_id: other_org(),
                name: name("Mine"),
                repo_url: repo("https://example.com/x.git"),
                build_command: None,
                at: t1(),
            })
            .then_error(ProjectError::NotFound);
    }

    #[test]
    fn a_deleted_or_unknown_project_cannot_be_updated_or_deleted() {
        given::<Project>([])
            .when(update("X", None))
            .then_error(ProjectError::NotFound);
        given::<Project>([
            created(),
            ProjectEvent::ProjectDeleted {
                project_id: id(),
                deleted_at: t1(),
            },
        ])
        .when(ProjectCommand::Delete {
            org_id: org(),
            at: t1(),
        })
        .then_error(ProjectError::NotFound);
    }

    #[test]
    fn the_state_remembers_when_the_project_was_created_and_changed() {
        let g = given::<Project>([
            created(),
            ProjectEvent::ProjectUpdated {
                project_id: id(),
                name: Some(name("B")),
                repo_url: None,
                build_command: None,
                updated_at: t1(),
            },
        ]);
        let p = g.state().active().unwrap();
        assert_eq!((p.created_at, p.updated_at), (t0(), t1()));
        assert_eq!(p.name.as_str(), "B");
    }

    #[test]
    fn a_project_is_deleted() {
        given::<Project>([created()])
            .when(ProjectCommand::Delete {
                org_id: org(),
                at: t1(),
            })
            .then([ProjectEvent::ProjectDeleted {
                project_id: id(),
                deleted_at: t1(),
            }]);
    }

    #[test]
    fn names_are_trimmed_bounded_and_unique_without_case_or_spacing() {
        assert_eq!(name("  Demo  ").as_str(), "Demo");
        assert_eq!(name("My   Demo").key(), name("my demo").key());
        assert!(ProjectName::parse("   ").is_err());
        assert!(ProjectName::parse(&"x".repeat(101)).is_err());
        assert!(ProjectName::parse(&"é".repeat(100)).is_ok());
        assert!(ProjectName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn look_alike_names_are_refused_or_share_the_key_of_the_name_they_imitate() {
        let zero_width = ProjectName::parse("Alpha\u{200b}Proj").unwrap_err();
        assert_eq!(zero_width.field, "name");
        let rtl = ProjectName::parse("AlphaProj\u{202e}").unwrap_err();
        assert_eq!(rtl.field, "name");
        assert!(rtl.message.contains("bidirectional"), "{}", rtl.message);
        assert_eq!(name("ＡｌｐｈａＰｒｏｊ").as_str(), "AlphaProj");
        assert_eq!(name("\u{410}lphaProj").key(), name("AlphaProj").key());
        assert_eq!(name("ＡｌｐｈａＰｒｏｊ").key(), name("AlphaProj").key());
        assert_eq!(name("My   Demo").sort_key(), "my demo");
    }

    #[test]
    fn repository_urls_must_be_urls_with_a_known_scheme() {
        assert!(RepoUrl::parse("https://github.com/demo/repo").is_ok());
        assert!(RepoUrl::parse("file:///tmp/repo").is_ok());
        assert!(RepoUrl::parse("ssh://git@example.com/x.git").is_ok());
        assert!(RepoUrl::parse("ssh://git@[::1]:22/x.git").is_ok());
        assert!(RepoUrl::parse("git@github.com:demo/repo.git").is_ok());
        for bad in [
            "",
            "not a url",
            "github.com/demo/repo",
            "ftp://example.com/x",
            "https://",
            "https://user:secret@example.com/x.git",
            "https://example.com/a\nb",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_repository_on_the_servers_disk_is_told_apart_from_a_remote_one() {
        for local in [
            "file:///etc",
            "file:///tmp/repo.git",
            "FILE:///etc",
            "file://localhost/etc",
        ] {
            assert!(RepoUrl::parse(local).unwrap().is_local(), "{local:?}");
        }
        for remote in [
            "https://github.com/demo/repo",
            "http://example.com/x.git",
            "ssh://git@example.com/x.git",
            "git://example.com/x.git",
            "git@github.com:demo/file.git",
        ] {
            assert!(!RepoUrl::parse(remote).unwrap().is_local(), "{remote:?}");
        }
    }

    #[test]
    fn remote_helpers_plain_paths_and_option_like_hosts_are_refused() {
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "/etc/passwd",
            "./repo",
            "../repo",
            "~/repo",
            "repo",
            "C:\\repo",
            "-oProxyCommand=x@host:path",
            "git@-oProxyCommand=x:path",
            "ssh://-oProxyCommand=x/path",
            "user@host:",
        ] {
            let err = RepoUrl::parse(bad).expect_err(bad);
            assert_eq!(err.field, "repo");
        }
        assert!(
            RepoUrl::parse("ext::sh -c x")
                .unwrap_err()
                .message
                .contains("remote helper")
        );
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let e = created();
        let (ty, data) = e.encode();
        assert_eq!(ty, "ProjectCreated");
        assert_eq!(data["name"], "Demo");
        assert_eq!(ProjectEvent::decode(&ty, &data).unwrap(), e);
        assert!(ProjectEvent::decode("Nope", &data).is_err());
    }
}

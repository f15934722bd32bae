//! An environment: a Python virtual environment of an organization's, made by a backend (pip,
//! uv…) for one Python version. `creating → ready | failed`, then `deleted` (or `expired`, for an
//! ephemeral one past its time to live). What is installed in it is recorded as it is found after
//! each operation: one event per package that appeared, changed version or went away, so the log
//! says what changed and when.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::requirement::{Requirement, normalize_name as normalize};
use super::values::{BackendKind, EnvName, PythonVersion};
use crate::value::{InvalidValue, text};
use crate::{Aggregate, DomainEvent};

/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Most packages asked for at creation (GestVenv: 1000).
pub const MAX_PACKAGES: usize = 1000;

/// A description: at most 1000 characters.
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    text("description", raw, 0, MAX_DESCRIPTION_CHARS)
}

/// Where an environment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    /// Its backend is making it.
    Creating,
    /// It can be used.
    Ready,
    /// It could not be made.
    Failed,
    /// Deleted.
    Deleted,
    /// An ephemeral environment past its time to live.
    Expired,
}

impl EnvStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Creating,
        Self::Ready,
        Self::Failed,
        Self::Deleted,
        Self::Expired,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
            Self::Expired => "expired",
        }
    }

    /// Parses a status's name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the environment is gone (its directory removed or to be removed).
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Deleted | Self::Expired)
    }
}

/// What makes an environment ephemeral: when it expires, and how it is isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ephemeral {
    /// Its time to live, in seconds from its creation.
    pub ttl_secs: u64,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// GestVenv's `isolation_level` (`process`).
    pub isolation_level: String,
}

/// A package found installed in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Its name, as the backend reports it.
    pub name: String,
    /// Its version.
    pub version: String,
    /// When it was first seen at this version.
    pub installed_at: DateTime<Utc>,
}

/// What an environment holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvironmentData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name, unique within the organization.
    pub name: EnvName,
    /// Its Python version.
    pub python_version: PythonVersion,
    /// The Python it was made with, once made (`3.11.7`).
    pub python: Option<String>,
    /// Its backend.
    pub backend: BackendKind,
    /// What it is for.
    pub description: String,
    /// The packages asked for at creation.
    pub requested: Vec<Requirement>,
    /// Where it stands.
    pub status: EnvStatus,
    /// Why it could not be made.
    pub error: Option<String>,
    /// What is installed, by normalized name.
    pub packages: BTreeMap<String, Package>,
    /// Set for an ephemeral environment.
    pub ephemeral: Option<Ephemeral>,
    /// The operation that makes it.
    pub creation: Uuid,
    /// When it was last activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The environment aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Environment {
    /// Never created.
    #[default]
    Absent,
    /// Created.
    Present(Box<EnvironmentData>),
}

impl Environment {
    /// The environment, whatever its status.
    pub fn data(&self) -> Option<&EnvironmentData> {
        match self {
            Self::Present(e) => Some(e),
            Self::Absent => None,
        }
    }

    /// The environment, if it is `org_id`'s and not gone.
    pub fn visible_to(&self, org_id: Uuid) -> Option<&EnvironmentData> {
        self.data()
            .filter(|e| e.org_id == org_id && !e.status.is_gone())
    }

    /// The environment if it is not gone (whoever's it is: runners act for every organization).
    pub fn live(&self) -> Option<&EnvironmentData> {
        self.data().filter(|e| !e.status.is_gone())
    }
}

/// What a new environment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnvironment {
    /// Its name.
    pub name: EnvName,
    /// Its Python version.
    pub python_version: PythonVersion,
    /// Its backend.
    pub backend: BackendKind,
    /// What it is for.
    pub description: String,
    /// Packages to install once it is made.
    pub packages: Vec<Requirement>,
    /// Set for an ephemeral environment.
    pub ephemeral: Option<Ephemeral>,
}

/// What can be asked of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentCommand {
    /// Create it (its backend then makes it: [`EnvironmentCommand::MarkReady`]).
    Create {
        /// Its id.
        environment_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// What it is.
        new: NewEnvironment,
        /// The operation that makes it.
        operation_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its backend made it.
    MarkReady {
        /// The Python it runs (`3.11.7`).
        python: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its backend could not make it.
    MarkFailed {
        /// Why.
        error: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Change its description.
    Update {
        /// The organization acting.
        org_id: Uuid,
        /// The new description.
        description: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record what is installed in it now (read from the environment itself).
    RecordPackages {
        /// Every package found, name and version.
        found: Vec<(String, String)>,
        /// The operation that looked.
        operation_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Make it the organization's active environment.
    Activate {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it (its directory is then removed).
    Delete {
        /// The organization acting.
        org_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Expire it: an ephemeral environment whose time has come.
    Expire {
        /// When (at or after its expiry).
        at: DateTime<Utc>,
    },
}

/// What happens to environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EnvironmentEvent {
    /// Created; its backend is making it.
    EnvironmentCreated {
        /// Its id.
        environment_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name.
        name: EnvName,
        /// Its Python version.
        python_version: PythonVersion,
        /// Its backend.
        backend: BackendKind,
        /// What it is for.
        #[serde(default)]
        description: String,
        /// Packages to install once it is made.
        #[serde(default)]
        packages: Vec<Requirement>,
        /// Set for an ephemeral environment.
        #[serde(default)]
        ephemeral: Option<Ephemeral>,
        /// The operation that makes it.
        operation_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its backend made it.
    EnvironmentReady {
        /// Its id.
        environment_id: Uuid,
        /// The Python it runs.
        python: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its backend could not make it.
    EnvironmentCreationFailed {
        /// Its id.
        environment_id: Uuid,
        /// Why.
        error: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its fields changed.
    EnvironmentUpdated {
        /// Its id.
        environment_id: Uuid,
        /// The description.
        description: String,
        /// The fields that changed (GestVenv's `changes`).
        changes: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A package appeared in it, or changed version.
    PackageInstalled {
        /// The environment.
        environment_id: Uuid,
        /// The package.
        package: Package,
        /// The version it had before, if it was there.
        #[serde(default)]
        previous_version: Option<String>,
        /// The operation that found it.
        #[serde(default)]
        operation_id: Option<Uuid>,
    },
    /// A package went away.
    PackageUninstalled {
        /// The environment.
        environment_id: Uuid,
        /// Its name.
        package_name: String,
        /// The version it had.
        version: String,
        /// The operation that found it gone.
        #[serde(default)]
        operation_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// It became the organization's active environment.
    EnvironmentActivated {
        /// Its id.
        environment_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deleted.
    EnvironmentDeleted {
        /// Its id.
        environment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// An ephemeral environment reached the end of its time to live.
    EnvironmentExpired {
        /// Its id.
        environment_id: Uuid,
        /// When it was due.
        expires_at: DateTime<Utc>,
        /// When it was expired.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for EnvironmentEvent {}

/// Why an environment command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    /// No such environment in this organization (or it is gone).
    #[error("the environment does not exist")]
    NotFound,
    /// It exists already.
    #[error("the environment already exists")]
    AlreadyExists,
    /// It is not ready (being made, or it failed).
    #[error("the environment is {} and not ready", .0.as_str())]
    NotReady(EnvStatus),
    /// It is not being made.
    #[error("the environment is {}, not being created", .0.as_str())]
    NotCreating(EnvStatus),
    /// It is not ephemeral.
    #[error("the environment is not ephemeral")]
    NotEphemeral,
    /// Its time has not come.
    #[error("the environment does not expire before {0}")]
    NotDue(DateTime<Utc>),
}

impl Aggregate for Environment {
    type Command = EnvironmentCommand;
    type Event = EnvironmentEvent;
    type Error = EnvironmentError;
    const CATEGORY: &'static str = "environment";

    fn decide(
        &self,
        command: EnvironmentCommand,
    ) -> Result<Vec<EnvironmentEvent>, EnvironmentError> {
        use EnvironmentCommand as C;
        use EnvironmentError as E;
        use EnvironmentEvent as V;
        let e = match (self, command) {
            (
                Self::Absent,
                C::Create {
                    environment_id,
                    org_id,
                    new,
                    operation_id,
                    by,
                    at,
                },
            ) => {
                return Ok(vec![V::EnvironmentCreated {
                    environment_id,
                    org_id,
                    name: new.name,
                    python_version: new.python_version,
                    backend: new.backend,
                    description: new.description,
                    packages: new.packages,
                    ephemeral: new.ephemeral,
                    operation_id,
                    by,
                    at,
                }]);
            }
            (Self::Present(_), C::Create { .. }) => return Err(E::AlreadyExists),
            (Self::Absent, _) => return Err(E::NotFound),
            (Self::Present(e), command) => (e, command),
        };
        match e {
            (e, C::MarkReady { python, at }) => match e.status {
                EnvStatus::Creating => Ok(vec![V::EnvironmentReady {
                    environment_id: e.id,
                    python,
                    at,
                }]),
                other => Err(E::NotCreating(other)),
            },
            (e, C::MarkFailed { error, at }) => match e.status {
                EnvStatus::Creating => Ok(vec![V::EnvironmentCreationFailed {
                    environment_id: e.id,
                    error,
                    at,
                }]),
                other => Err(E::NotCreating(other)),
            },
            (
                e,
                C::Update {
                    org_id,
                    description,
                    at,
                },
            ) => {
                if e.org_id != org_id || e.status.is_gone() {
                    return Err(E::NotFound);
                }
                if e.description == description {
                    return Ok(vec![]);
                }
                Ok(vec![V::EnvironmentUpdated {
                    environment_id: e.id,
                    description,
                    changes: vec!["description".to_owned()],
                    at,
                }])
            }
            (
                e,
                C::RecordPackages {
                    found,
                    operation_id,
                    at,
                },
            ) => {
                if e.status != EnvStatus::Ready {
                    return Err(E::NotReady(e.status));
                }
                Ok(package_changes(e, found, operation_id, at))
            }
            (e, C::Activate { org_id, at }) => {
                if e.org_id != org_id || e.status.is_gone() {
                    return Err(E::NotFound);
                }
                if e.status != EnvStatus::Ready {
                    return Err(E::NotReady(e.status));
                }
                Ok(vec![V::EnvironmentActivated {
                    environment_id: e.id,
                    at,
                }])
            }
            (e, C::Delete { org_id, by, at }) => {
                if e.org_id != org_id || e.status.is_gone() {
                    return Err(E::NotFound);
                }
                Ok(vec![V::EnvironmentDeleted {
                    environment_id: e.id,
                    by,
                    at,
                }])
            }
            (e, C::Expire { at }) => {
                if e.status.is_gone() {
                    return Ok(vec![]);
                }
                let Some(ephemeral) = &e.ephemeral else {
                    return Err(E::NotEphemeral);
                };
                if at < ephemeral.expires_at {
                    return Err(E::NotDue(ephemeral.expires_at));
                }
                Ok(vec![V::EnvironmentExpired {
                    environment_id: e.id,
                    expires_at: ephemeral.expires_at,
                    at,
                }])
            }
            (_, C::Create { .. }) => Err(E::AlreadyExists),
        }
    }

    fn evolve(self, event: &EnvironmentEvent) -> Self {
        use EnvironmentEvent as V;
        match (self, event) {
            (
                Self::Absent,
                V::EnvironmentCreated {
                    environment_id,
                    org_id,
                    name,
                    python_version,
                    backend,
                    description,
                    packages,
                    ephemeral,
                    operation_id,
                    by,
                    at,
                },
            ) => Self::Present(Box::new(EnvironmentData {
                creation: *operation_id,
                id: *environment_id,
                org_id: *org_id,
                name: name.clone(),
                python_version: *python_version,
                python: None,
                backend: *backend,
                description: description.clone(),
                requested: packages.clone(),
                status: EnvStatus::Creating,
                error: None,
                packages: BTreeMap::new(),
                ephemeral: ephemeral.clone(),
                activated_at: None,
                created_by: by.clone(),
                created_at: *at,
                updated_at: *at,
            })),
            (Self::Present(mut e), event) => {
                match event {
                    V::EnvironmentCreated { .. } => {}
                    V::EnvironmentReady { python, at, .. } => {
                        e.status = EnvStatus::Ready;
                        e.python = Some(python.clone());
                        e.updated_at = *at;
                    }
                    V::EnvironmentCreationFailed { error, at, .. } => {
                        e.status = EnvStatus::Failed;
                        e.error = Some(error.clone());
                        e.updated_at = *at;
                    }
                    V::EnvironmentUpdated {
                        description, at, ..
                    } => {
                        e.description = description.clone();
                        e.updated_at = *at;
                    }
                    V::PackageInstalled { package, .. } => {
                        e.updated_at = e.updated_at.max(package.installed_at);
                        e.packages.insert(normalize(&package.name), package.clone());
                    }
                    V::PackageUninstalled {
                        package_name, at, ..
                    } => {
                        e.packages.remove(&normalize(package_name));
                        e.updated_at = *at;
                    }
                    V::EnvironmentActivated { at, .. } => {
                        e.activated_at = Some(*at);
                        e.updated_at = *at;
                    }
                    V::EnvironmentDeleted { at, .. } => {
                        e.status = EnvStatus::Deleted;
                        e.updated_at = *at;
                    }
                    V::EnvironmentExpired { at, .. } => {
                        e.status = EnvStatus::Expired;
                        e.updated_at = *at;
                    }
                }
                Self::Present(e)
            }
            (state, _) => state,
        }
    }
}

/// The events that take an environment's package list to what was found: new and changed
/// packages first (by name), then those that went away.
fn package_changes(
    e: &EnvironmentData,
    found: Vec<(String, String)>,
    operation_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> Vec<EnvironmentEvent> {
    let found: BTreeMap<String, (String, String)> = found
        .into_iter()
        .map(|(name, version)| (normalize(&name), (name, version)))
        .collect();
    let mut events = Vec::new();
    for (key, (name, version)) in &found {
        let previous = e.packages.get(key);
        if previous.is_some_and(|p| &p.version == version) {
            continue;
        }
        events.push(EnvironmentEvent::PackageInstalled {
            environment_id: e.id,
            package: Package {
                name: name.clone(),
                version: version.clone(),
                installed_at: at,
            },
            previous_version: previous.map(|p| p.version.clone()),
            operation_id,
        });
    }
    for (key, p) in &e.packages {
        if !found.contains_key(key) {
            events.push(EnvironmentEvent::PackageUninstalled {
                environment_id: e.id,
                package_name: p.name.clone(),
                version: p.version.clone(),
                operation_id,
                at,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    const ORG: Uuid = Uuid::from_u128(1);
    const ID: Uuid = Uuid::from_u128(7);

    fn created(ephemeral: Option<Ephemeral>) -> EnvironmentEvent {
        EnvironmentEvent::EnvironmentCreated {
            environment_id: ID,
            org_id: ORG,
            name: EnvName::parse("my-project").unwrap(),
            python_version: PythonVersion::parse("3.11").unwrap(),
            backend: BackendKind::Uv,
            description: String::new(),
            packages: vec![],
            ephemeral,
            operation_id: Uuid::from_u128(8),
            by: "u1".into(),
            at: at(0),
        }
    }
    fn ready() -> EnvironmentEvent {
        EnvironmentEvent::EnvironmentReady {
            environment_id: ID,
            python: "3.11.7".into(),
            at: at(1),
        }
    }
    fn installed(name: &str, version: &str, s: i64) -> EnvironmentEvent {
        EnvironmentEvent::PackageInstalled {
            environment_id: ID,
            package: Package {
                name: name.into(),
                version: version.into(),
                installed_at: at(s),
            },
            previous_version: None,
            operation_id: None,
        }
    }
    fn found(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_environment_is_created_then_made_ready_or_failed_by_its_backend_once() {
        let new = NewEnvironment {
            name: EnvName::parse("my-project").unwrap(),
            python_version: PythonVersion::parse("3.11").unwrap(),
            backend: BackendKind::Uv,
            description: String::new(),
            packages: vec![],
            ephemeral: None,
        };
        given::<Environment>([])
            .when(EnvironmentCommand::Create {
                environment_id: ID,
                org_id: ORG,
                new,
                operation_id: Uuid::from_u128(8),
                by: "u1".into(),
                at: at(0),
            })
            .then([created(None)]);
        given::<Environment>([created(None)])
            .when(EnvironmentCommand::MarkReady {
                python: "3.11.7".into(),
                at: at(1),
            })
            .then([ready()]);
        given::<Environment>([created(None), ready()])
            .when(EnvironmentCommand::MarkFailed {
                error: "late".into(),
                at: at(2),
            })
            .then_error(EnvironmentError::NotCreating(EnvStatus::Ready));
        given::<Environment>([])
            .when(EnvironmentCommand::MarkReady {
                python: "3.11.7".into(),
                at: at(1),
            })
            .then_error(EnvironmentError::NotFound);
    }

    #[test]
    fn recorded_packages_become_one_event_per_package_that_appeared_changed_or_went_away() {
        let history = [
            created(None),
            ready(),
            installed("six", "1.16.0", 2),
            installed("idna", "3.6", 2),
        ];
        given::<Environment>(history.clone())
            .when(EnvironmentCommand::RecordPackages {
                found: found(&[("Six", "1.16.0"), ("idna", "3.7"), ("requests", "2.32.0")]),
                operation_id: Some(Uuid::from_u128(9)),
                at: at(5),
            })
            .then([
                EnvironmentEvent::PackageInstalled {
                    environment_id: ID,
                    package: Package {
                        name: "idna".into(),
                        version: "3.7".into(),
                        installed_at: at(5),
                    },
                    previous_version: Some("3.6".into()),
                    operation_id: Some(Uuid::from_u128(9)),
                },
                EnvironmentEvent::PackageInstalled {
                    environment_id: ID,
                    package: Package {
                        name: "requests".into(),
                        version: "2.32.0".into(),
                        installed_at: at(5),
                    },
                    previous_version: None,
                    operation_id: Some(Uuid::from_u128(9)),
                },
            ]);
        given::<Environment>(history.clone())
            .when(EnvironmentCommand::RecordPackages {
                found: found(&[("idna", "3.6")]),
                operation_id: None,
                at: at(6),
            })
            .then([EnvironmentEvent::PackageUninstalled {
                environment_id: ID,
                package_name: "six".into(),
                version: "1.16.0".into(),
                operation_id: None,
                at: at(6),
            }]);
        let state = given::<Environment>(history);
        let e = state.state().data().unwrap();
        assert_eq!(e.packages.len(), 2);
        given::<Environment>([created(None)])
            .when(EnvironmentCommand::RecordPackages {
                found: vec![],
                operation_id: None,
                at: at(2),
            })
            .then_error(EnvironmentError::NotReady(EnvStatus::Creating));
    }

    #[test]
    fn only_a_ready_environment_of_the_organization_is_activated_and_a_deleted_one_is_gone() {
        given::<Environment>([created(None)])
            .when(EnvironmentCommand::Activate {
                org_id: ORG,
                at: at(2),
            })
            .then_error(EnvironmentError::NotReady(EnvStatus::Creating));
        given::<Environment>([created(None), ready()])
            .when(EnvironmentCommand::Activate {
                org_id: Uuid::from_u128(2),
                at: at(2),
            })
            .then_error(EnvironmentError::NotFound);
        given::<Environment>([created(None), ready()])
            .when(EnvironmentCommand::Activate {
                org_id: ORG,
                at: at(2),
            })
            .then([EnvironmentEvent::EnvironmentActivated {
                environment_id: ID,
                at: at(2),
            }]);
        let deleted = EnvironmentEvent::EnvironmentDeleted {
            environment_id: ID,
            by: "u1".into(),
            at: at(3),
        };
        given::<Environment>([created(None), ready()])
            .when(EnvironmentCommand::Delete {
                org_id: ORG,
                by: "u1".into(),
                at: at(3),
            })
            .then([deleted.clone()]);
        for command in [
            EnvironmentCommand::Delete {
                org_id: ORG,
                by: "u1".into(),
                at: at(4),
            },
            EnvironmentCommand::Update {
                org_id: ORG,
                description: "x".into(),
                at: at(4),
            },
        ] {
            given::<Environment>([created(None), ready(), deleted.clone()])
                .when(command)
                .then_error(EnvironmentError::NotFound);
        }
    }

    #[test]
    fn an_ephemeral_environment_expires_once_and_not_before_its_time() {
        let ephemeral = Ephemeral {
            ttl_secs: 60,
            expires_at: at(60),
            isolation_level: "process".into(),
        };
        let history = [created(Some(ephemeral)), ready()];
        given::<Environment>(history.clone())
            .when(EnvironmentCommand::Expire { at: at(59) })
            .then_error(EnvironmentError::NotDue(at(60)));
        let expired = EnvironmentEvent::EnvironmentExpired {
            environment_id: ID,
            expires_at: at(60),
            at: at(61),
        };
        given::<Environment>(history.clone())
            .when(EnvironmentCommand::Expire { at: at(61) })
            .then([expired.clone()]);
        let mut after = history.to_vec();
        after.push(expired);
        given::<Environment>(after)
            .when(EnvironmentCommand::Expire { at: at(62) })
            .then([]);
        given::<Environment>([created(None)])
            .when(EnvironmentCommand::Expire { at: at(62) })
            .then_error(EnvironmentError::NotEphemeral);
    }

    #[test]
    fn an_unchanged_description_records_nothing() {
        given::<Environment>([created(None)])
            .when(EnvironmentCommand::Update {
                org_id: ORG,
                description: String::new(),
                at: at(1),
            })
            .then([]);
    }
}

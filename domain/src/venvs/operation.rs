//! An operation: one piece of work a backend does on an environment (make it, install,
//! uninstall, update, refresh its package list) or on the organization's package cache. `queued → running → completed |
//! failed | cancelled`; a queued operation may be cancelled before it starts. Progress is
//! recorded as it goes (GestVenv's `operation:progress`), its output in the operation's log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::requirement::Requirement;
use super::values::PythonVersion;
use crate::{Aggregate, DomainEvent};

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperationRequest {
    /// Make the environment (then install the packages it was created with).
    CreateEnvironment,
    /// Install packages.
    Install {
        /// What to install.
        packages: Vec<Requirement>,
        /// Upgrade those already there.
        #[serde(default)]
        upgrade: bool,
    },
    /// Uninstall packages (by name).
    Uninstall {
        /// Their names.
        packages: Vec<String>,
    },
    /// Update packages, to the newest or to a version.
    Update {
        /// What to update (`name==to_version` when a version was asked for).
        packages: Vec<Requirement>,
    },
    /// Read what is installed again and record what changed.
    Refresh,
    /// Download packages' wheels into the organization's cache (no environment).
    CachePackages {
        /// What to download.
        packages: Vec<Requirement>,
        /// For which Python.
        python_version: PythonVersion,
    },
}

impl OperationRequest {
    /// Its kind's name (GestVenv's operation `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateEnvironment => "create_environment",
            Self::Install { .. } => "install",
            Self::Uninstall { .. } => "uninstall",
            Self::Update { .. } => "update",
            Self::Refresh => "refresh",
            Self::CachePackages { .. } => "cache_packages",
        }
    }

    /// Every kind's name.
    pub const KINDS: [&'static str; 6] = [
        "create_environment",
        "install",
        "uninstall",
        "update",
        "refresh",
        "cache_packages",
    ];
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Waiting for a runner.
    Queued,
    /// A runner is doing it.
    Running,
    /// Done.
    Completed,
    /// It failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl OperationStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a status's name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether it is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The backend said no (a package that does not exist, a conflict…).
    Backend,
    /// It ran past its time.
    TimedOut,
    /// Its runner stopped in the middle (a crash, a restart): it is not resumed.
    Interrupted,
    /// Its environment went away, or anything else.
    Error,
}

impl FailureReason {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::TimedOut => "timed_out",
            Self::Interrupted => "interrupted",
            Self::Error => "error",
        }
    }
}

/// What an operation holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OperationData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The environment it works on (none for the cache).
    pub environment_id: Option<Uuid>,
    /// What it does.
    pub request: OperationRequest,
    /// Where it stands.
    pub status: OperationStatus,
    /// How far, 0 to 100.
    pub progress: u8,
    /// What it is doing now.
    pub message: String,
    /// Who asked.
    pub by: String,
    /// The runner doing it.
    pub runner: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub failure: Option<FailureReason>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

/// The operation aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Operation {
    /// Never queued.
    #[default]
    Absent,
    /// Queued.
    Present(Box<OperationData>),
}

impl Operation {
    /// The operation.
    pub fn data(&self) -> Option<&OperationData> {
        match self {
            Self::Present(o) => Some(o),
            Self::Absent => None,
        }
    }

    /// The operation, if it is `org_id`'s.
    pub fn visible_to(&self, org_id: Uuid) -> Option<&OperationData> {
        self.data().filter(|o| o.org_id == org_id)
    }
}

/// How an operation ended, as its runner says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked; what it found (packages installed, files cached…).
    Completed {
        /// The result GestVenv's `operation:completed` carries.
        result: serde_json::Value,
    },
    /// It failed.
    Failed {
        /// Why.
        reason: FailureReason,
        /// What went wrong, in a sentence or the backend's last lines.
        error: String,
    },
}

/// What can be asked of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationCommand {
    /// Queue it.
    Queue {
        /// Its id.
        operation_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its environment.
        environment_id: Option<Uuid>,
        /// What it does.
        request: OperationRequest,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner takes it.
    Start {
        /// Which runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// It moved on.
    Progress {
        /// How far, 0 to 100 (never backwards).
        progress: u8,
        /// What it is doing.
        message: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// It ended.
    Finish {
        /// How.
        outcome: Outcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Cancel it (a running one's backend is then killed).
    Cancel {
        /// The organization acting.
        org_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OperationEvent {
    /// Queued.
    OperationQueued {
        /// Its id.
        operation_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// What it does.
        request: OperationRequest,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner started it.
    OperationStarted {
        /// Its id.
        operation_id: Uuid,
        /// Its kind (GestVenv's `type`).
        #[serde(rename = "type")]
        kind: String,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// Which runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// It moved on (GestVenv's `operation:progress`).
    OperationProgress {
        /// Its id.
        operation_id: Uuid,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// How far, 0 to 100.
        progress: u8,
        /// What it is doing.
        message: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// It did what it was asked.
    OperationCompleted {
        /// Its id.
        operation_id: Uuid,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// What it found.
        result: serde_json::Value,
        /// How long it ran, in seconds (GestVenv's `duration`).
        duration: f64,
        /// When.
        at: DateTime<Utc>,
    },
    /// It failed.
    OperationFailed {
        /// Its id.
        operation_id: Uuid,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// Why.
        reason: FailureReason,
        /// What went wrong.
        error: String,
        /// How long it ran, in seconds (`None`: it never started).
        duration: Option<f64>,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was cancelled.
    OperationCancelled {
        /// Its id.
        operation_id: Uuid,
        /// Its environment.
        #[serde(default)]
        environment_id: Option<Uuid>,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for OperationEvent {}

/// Why an operation command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// No such operation in this organization.
    #[error("the operation does not exist")]
    NotFound,
    /// It exists already.
    #[error("the operation already exists")]
    AlreadyExists,
    /// Only a queued operation starts.
    #[error("the operation is {}, not queued", .0.as_str())]
    NotQueued(OperationStatus),
    /// Only a running operation moves on or ends.
    #[error("the operation is {}, not running", .0.as_str())]
    NotRunning(OperationStatus),
    /// It is over.
    #[error("the operation is already {}", .0.as_str())]
    Finished(OperationStatus),
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0) as f64) / 1000.0
}

impl Aggregate for Operation {
    type Command = OperationCommand;
    type Event = OperationEvent;
    type Error = OperationError;
    const CATEGORY: &'static str = "operation";

    fn decide(&self, command: OperationCommand) -> Result<Vec<OperationEvent>, OperationError> {
        use OperationCommand as C;
        use OperationError as E;
        use OperationEvent as V;
        let (o, command) = match (self, command) {
            (
                Self::Absent,
                C::Queue {
                    operation_id,
                    org_id,
                    environment_id,
                    request,
                    by,
                    at,
                },
            ) => {
                return Ok(vec![V::OperationQueued {
                    operation_id,
                    org_id,
                    environment_id,
                    request,
                    by,
                    at,
                }]);
            }
            (Self::Present(_), C::Queue { .. }) => return Err(E::AlreadyExists),
            (Self::Absent, _) => return Err(E::NotFound),
            (Self::Present(o), command) => (o, command),
        };
        let env = o.environment_id;
        match command {
            C::Queue { .. } => Err(E::AlreadyExists),
            C::Start { runner, at } => match o.status {
                OperationStatus::Queued => Ok(vec![V::OperationStarted {
                    operation_id: o.id,
                    kind: o.request.kind().to_owned(),
                    environment_id: env,
                    runner,
                    at,
                }]),
                other => Err(E::NotQueued(other)),
            },
            C::Progress {
                progress,
                message,
                at,
            } => {
                if o.status != OperationStatus::Running {
                    return Err(E::NotRunning(o.status));
                }
                let progress = progress.min(100);
                if progress < o.progress || (progress == o.progress && message == o.message) {
                    return Ok(vec![]);
                }
                Ok(vec![V::OperationProgress {
                    operation_id: o.id,
                    environment_id: env,
                    progress,
                    message,
                    at,
                }])
            }
            C::Finish { outcome, at } => {
                let (OperationStatus::Running, Some(started)) = (o.status, o.started_at) else {
                    return Err(E::NotRunning(o.status));
                };
                let duration = seconds_between(started, at);
                Ok(vec![match outcome {
                    Outcome::Completed { result } => V::OperationCompleted {
                        operation_id: o.id,
                        environment_id: env,
                        result,
                        duration,
                        at,
                    },
                    Outcome::Failed { reason, error } => V::OperationFailed {
                        operation_id: o.id,
                        environment_id: env,
                        reason,
                        error,
                        duration: Some(duration),
                        at,
                    },
                }])
            }
            C::Cancel { org_id, by, at } => {
                if o.org_id != org_id {
                    return Err(E::NotFound);
                }
                if o.status.is_finished() {
                    return Err(E::Finished(o.status));
                }
                Ok(vec![V::OperationCancelled {
                    operation_id: o.id,
                    environment_id: env,
                    by,
                    at,
                }])
            }
        }
    }

    fn evolve(self, event: &OperationEvent) -> Self {
        use OperationEvent as V;
        match (self, event) {
            (
                Self::Absent,
                V::OperationQueued {
                    operation_id,
                    org_id,
                    environment_id,
                    request,
                    by,
                    at,
                },
            ) => Self::Present(Box::new(OperationData {
                id: *operation_id,
                org_id: *org_id,
                environment_id: *environment_id,
                request: request.clone(),
                status: OperationStatus::Queued,
                progress: 0,
                message: String::new(),
                by: by.clone(),
                runner: None,
                queued_at: *at,
                started_at: None,
                finished_at: None,
                failure: None,
                error: None,
            })),
            (Self::Present(mut o), event) => {
                match event {
                    V::OperationQueued { .. } => {}
                    V::OperationStarted { runner, at, .. } => {
                        o.status = OperationStatus::Running;
                        o.runner = Some(runner.clone());
                        o.started_at = Some(*at);
                    }
                    V::OperationProgress {
                        progress, message, ..
                    } => {
                        o.progress = *progress;
                        o.message = message.clone();
                    }
                    V::OperationCompleted { at, .. } => {
                        o.status = OperationStatus::Completed;
                        o.progress = 100;
                        o.finished_at = Some(*at);
                    }
                    V::OperationFailed {
                        reason, error, at, ..
                    } => {
                        o.status = OperationStatus::Failed;
                        o.failure = Some(*reason);
                        o.error = Some(error.clone());
                        o.finished_at = Some(*at);
                    }
                    V::OperationCancelled { at, .. } => {
                        o.status = OperationStatus::Cancelled;
                        o.finished_at = Some(*at);
                    }
                }
                Self::Present(o)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    const ORG: Uuid = Uuid::from_u128(1);
    const ENV: Uuid = Uuid::from_u128(5);
    const ID: Uuid = Uuid::from_u128(9);

    fn queued() -> OperationEvent {
        OperationEvent::OperationQueued {
            operation_id: ID,
            org_id: ORG,
            environment_id: Some(ENV),
            request: OperationRequest::Install {
                packages: vec![Requirement::parse("six").unwrap()],
                upgrade: false,
            },
            by: "u1".into(),
            at: at(0),
        }
    }
    fn started() -> OperationEvent {
        OperationEvent::OperationStarted {
            operation_id: ID,
            kind: "install".into(),
            environment_id: Some(ENV),
            runner: "r1".into(),
            at: at(1),
        }
    }

    #[test]
    fn an_operation_is_queued_started_by_one_runner_and_completed_with_its_duration() {
        given::<Operation>([queued()])
            .when(OperationCommand::Start {
                runner: "r1".into(),
                at: at(1),
            })
            .then([started()]);
        given::<Operation>([queued(), started()])
            .when(OperationCommand::Start {
                runner: "r2".into(),
                at: at(2),
            })
            .then_error(OperationError::NotQueued(OperationStatus::Running));
        given::<Operation>([queued(), started()])
            .when(OperationCommand::Finish {
                outcome: Outcome::Completed {
                    result: serde_json::json!({"installed": ["six"]}),
                },
                at: at(3),
            })
            .then([OperationEvent::OperationCompleted {
                operation_id: ID,
                environment_id: Some(ENV),
                result: serde_json::json!({"installed": ["six"]}),
                duration: 2.0,
                at: at(3),
            }]);
        given::<Operation>([queued()])
            .when(OperationCommand::Finish {
                outcome: Outcome::Completed {
                    result: serde_json::Value::Null,
                },
                at: at(3),
            })
            .then_error(OperationError::NotRunning(OperationStatus::Queued));
    }

    #[test]
    fn progress_only_moves_forward_while_running() {
        given::<Operation>([queued(), started()])
            .when(OperationCommand::Progress {
                progress: 40,
                message: "installing".into(),
                at: at(2),
            })
            .then([OperationEvent::OperationProgress {
                operation_id: ID,
                environment_id: Some(ENV),
                progress: 40,
                message: "installing".into(),
                at: at(2),
            }]);
        let forty = OperationEvent::OperationProgress {
            operation_id: ID,
            environment_id: Some(ENV),
            progress: 40,
            message: "installing".into(),
            at: at(2),
        };
        given::<Operation>([queued(), started(), forty.clone()])
            .when(OperationCommand::Progress {
                progress: 30,
                message: "back".into(),
                at: at(3),
            })
            .then([]);
        given::<Operation>([queued(), started(), forty])
            .when(OperationCommand::Progress {
                progress: 40,
                message: "installing".into(),
                at: at(3),
            })
            .then([]);
        given::<Operation>([queued()])
            .when(OperationCommand::Progress {
                progress: 10,
                message: "early".into(),
                at: at(3),
            })
            .then_error(OperationError::NotRunning(OperationStatus::Queued));
    }

    #[test]
    fn a_queued_or_running_operation_is_cancelled_by_its_organization_and_a_finished_one_is_not() {
        for history in [vec![queued()], vec![queued(), started()]] {
            given::<Operation>(history)
                .when(OperationCommand::Cancel {
                    org_id: ORG,
                    by: "u1".into(),
                    at: at(4),
                })
                .then([OperationEvent::OperationCancelled {
                    operation_id: ID,
                    environment_id: Some(ENV),
                    by: "u1".into(),
                    at: at(4),
                }]);
        }
        given::<Operation>([queued()])
            .when(OperationCommand::Cancel {
                org_id: Uuid::from_u128(2),
                by: "u2".into(),
                at: at(4),
            })
            .then_error(OperationError::NotFound);
        let failed = OperationEvent::OperationFailed {
            operation_id: ID,
            environment_id: Some(ENV),
            reason: FailureReason::Interrupted,
            error: "the runner stopped".into(),
            duration: Some(1.0),
            at: at(2),
        };
        given::<Operation>([queued(), started(), failed])
            .when(OperationCommand::Cancel {
                org_id: ORG,
                by: "u1".into(),
                at: at(4),
            })
            .then_error(OperationError::Finished(OperationStatus::Failed));
    }

    #[test]
    fn a_started_event_carries_gestvenvs_type_field() {
        let (ty, data) = started().encode();
        assert_eq!(ty, "OperationStarted");
        assert_eq!(data["type"], "install");
        assert_eq!(OperationEvent::decode(&ty, &data).unwrap(), started());
    }
}

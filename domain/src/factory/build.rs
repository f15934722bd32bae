//! A build: one run of a project's build command against the project as it was when the build
//! was triggered. `queued → running → succeeded | failed | cancelled`; a queued build may also be
//! cancelled before it starts. A finished build is restarted as a new build linked to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::project::{BuildCommand, Project, RepoUrl};
use crate::{Aggregate, DomainEvent};

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Waiting for a runner.
    Queued,
    /// A runner is running it.
    Running,
    /// It ran and its command exited with 0.
    Succeeded,
    /// It ran and failed (see [`FailureReason`]).
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl BuildStatus {
    /// Every status, in the order of a build's life.
    pub const ALL: [BuildStatus; 5] = [
        BuildStatus::Queued,
        BuildStatus::Running,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
        BuildStatus::Cancelled,
    ];

    /// Its name in the API and the read models.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a status name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the build is over.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Cancelled
        )
    }
}

/// Why a build failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Its command exited with a non-zero status (or was killed by a signal).
    ExitStatus,
    /// It ran longer than the configured timeout and was killed.
    TimedOut,
    /// The runner could not run it: the checkout failed, the command could not start…
    Error,
    /// The server stopped while it ran; it was failed when the runner started again.
    Interrupted,
}

impl FailureReason {
    /// Its name in the API and the read models (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ExitStatus => "exit_status",
            FailureReason::TimedOut => "timed_out",
            FailureReason::Error => "error",
            FailureReason::Interrupted => "interrupted",
        }
    }
}

/// How a run ended, as the runner reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Succeeded,
    /// Anything else.
    Failed {
        /// The command's exit status, when it exited.
        exit_code: Option<i32>,
        /// Why.
        reason: FailureReason,
        /// A short explanation for people.
        message: String,
    },
}

/// What a build holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The project it builds.
    pub project_id: Uuid,
    /// The project's revision it was triggered against.
    pub project_revision: u64,
    /// The repository, as the project had it.
    pub repo_url: RepoUrl,
    /// The command, as the project had it (`None`: the driver's default).
    pub build_command: Option<BuildCommand>,
    /// Who triggered it.
    pub triggered_by: String,
    /// The build it restarts, if any.
    pub restart_of: Option<Uuid>,
    /// Where it is.
    pub status: BuildStatus,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// The runner that started it.
    pub runner: Option<String>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its command's exit status.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub failure: Option<FailureReason>,
}

/// The build aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one build is folded per command, by value: a box would cost an allocation per event"
)]
pub enum Build {
    /// Never queued.
    #[default]
    Absent,
    /// Queued, running or finished.
    Present(BuildData),
}

impl Build {
    /// The build, if it exists.
    pub fn data(&self) -> Option<&BuildData> {
        match self {
            Build::Present(b) => Some(b),
            Build::Absent => None,
        }
    }

    /// The build, if it exists in `org_id` (another organization's build does not exist for it).
    pub fn visible_to(&self, org_id: Uuid) -> Option<&BuildData> {
        self.data().filter(|b| b.org_id == org_id)
    }

    /// The command that queues a new build restarting this one: only a finished build can be
    /// restarted, and the new build runs what this one ran.
    pub fn restart(
        &self,
        org_id: Uuid,
        build_id: Uuid,
        triggered_by: String,
        at: DateTime<Utc>,
    ) -> Result<BuildAction, BuildError> {
        let old = self.visible_to(org_id).ok_or(BuildError::NotFound)?;
        if !old.status.is_finished() {
            return Err(BuildError::NotFinished);
        }
        Ok(BuildAction::Queue {
            build_id,
            org_id,
            project_id: old.project_id,
            project_revision: old.project_revision,
            repo_url: old.repo_url.clone(),
            build_command: old.build_command.clone(),
            triggered_by,
            restart_of: Some(old.id),
            at,
        })
    }
}

impl Project {
    /// The command that queues a build of this project as it is now, at `revision` (its
    /// stream's): a deleted project, or another organization's, is not found.
    pub fn trigger_build(
        &self,
        revision: u64,
        org_id: Uuid,
        build_id: Uuid,
        triggered_by: String,
        at: DateTime<Utc>,
    ) -> Result<BuildAction, BuildError> {
        let p = self
            .active()
            .filter(|p| p.org_id == org_id)
            .ok_or(BuildError::ProjectNotFound)?;
        Ok(BuildAction::Queue {
            build_id,
            org_id,
            project_id: p.id,
            project_revision: revision,
            repo_url: p.repo_url.clone(),
            build_command: p.build_command.clone(),
            triggered_by,
            restart_of: None,
            at,
        })
    }
}

/// What can be asked of a build. (Not `BuildCommand`: that is the shell command a project runs.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildAction {
    /// Queue it (made by [`Project::trigger_build`] or [`Build::restart`]).
    Queue {
        /// Its id.
        build_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// The project.
        project_id: Uuid,
        /// The project's revision.
        project_revision: u64,
        /// The repository.
        repo_url: RepoUrl,
        /// The command.
        build_command: Option<BuildCommand>,
        /// Who.
        triggered_by: String,
        /// The build it restarts.
        restart_of: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner starts it.
    Start {
        /// Which runner.
        runner: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner reports how it ended.
    Finish {
        /// How.
        outcome: Outcome,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone cancels it.
    Cancel {
        /// The organization acting.
        org_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BuildEvent {
    /// A build was queued.
    BuildQueued {
        /// Its id.
        build_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// The project.
        project_id: Uuid,
        /// The project's revision.
        project_revision: u64,
        /// The repository.
        repo_url: RepoUrl,
        /// The command.
        #[serde(default)]
        build_command: Option<BuildCommand>,
        /// Who.
        triggered_by: String,
        /// The build it restarts.
        #[serde(default)]
        restart_of: Option<Uuid>,
        /// When.
        queued_at: DateTime<Utc>,
    },
    /// A runner started it.
    BuildStarted {
        /// Its id.
        build_id: Uuid,
        /// Which runner.
        runner: String,
        /// When.
        started_at: DateTime<Utc>,
    },
    /// Its command exited with 0.
    BuildSucceeded {
        /// Its id.
        build_id: Uuid,
        /// When.
        finished_at: DateTime<Utc>,
        /// How long it ran, in milliseconds.
        duration_ms: i64,
    },
    /// It failed.
    BuildFailed {
        /// Its id.
        build_id: Uuid,
        /// Its command's exit status, when it exited.
        exit_code: Option<i32>,
        /// Why.
        reason: FailureReason,
        /// A short explanation.
        message: String,
        /// When.
        finished_at: DateTime<Utc>,
        /// How long it ran, in milliseconds.
        duration_ms: i64,
    },
    /// It was cancelled.
    BuildCancelled {
        /// Its id.
        build_id: Uuid,
        /// Who.
        by: String,
        /// When.
        finished_at: DateTime<Utc>,
        /// How long it ran before, in milliseconds (`None`: it never started).
        duration_ms: Option<i64>,
    },
}

impl DomainEvent for BuildEvent {}

/// Why a build command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No such build in this organization.
    #[error("the build does not exist")]
    NotFound,
    /// The project to build does not exist (or was deleted) in this organization.
    #[error("the project does not exist")]
    ProjectNotFound,
    /// A build with this id exists.
    #[error("the build already exists")]
    AlreadyExists,
    /// Only a queued build can start.
    #[error("the build is {0:?}, not queued")]
    NotQueued(BuildStatus),
    /// Only a running build can finish.
    #[error("the build is {0:?}, not running")]
    NotRunning(BuildStatus),
    /// A finished build cannot be cancelled.
    #[error("the build already finished ({0:?})")]
    AlreadyFinished(BuildStatus),
    /// Only a finished build can be restarted.
    #[error("the build has not finished yet")]
    NotFinished,
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

impl Aggregate for Build {
    type Command = BuildAction;
    type Event = BuildEvent;
    type Error = BuildError;
    const CATEGORY: &'static str = "build";

    fn parents(&self) -> Vec<(&'static str, Uuid)> {
        self.data()
            .map(|b| vec![(Project::CATEGORY, b.project_id)])
            .unwrap_or_default()
    }

    fn decide(&self, command: BuildAction) -> Result<Vec<BuildEvent>, BuildError> {
        let b = match (self, command) {
            (
                Build::Absent,
                BuildAction::Queue {
                    build_id,
                    org_id,
                    project_id,
                    project_revision,
                    repo_url,
                    build_command,
                    triggered_by,
                    restart_of,
                    at,
                },
            ) => {
                return Ok(vec![BuildEvent::BuildQueued {
                    build_id,
                    org_id,
                    project_id,
                    project_revision,
                    repo_url,
                    build_command,
                    triggered_by,
                    restart_of,
                    queued_at: at,
                }]);
            }
            (Build::Present(_), BuildAction::Queue { .. }) => {
                return Err(BuildError::AlreadyExists);
            }
            (Build::Absent, _) => return Err(BuildError::NotFound),
            (Build::Present(b), command) => (b, command),
        };
        match b {
            (b, BuildAction::Start { runner, at }) => match b.status {
                BuildStatus::Queued => Ok(vec![BuildEvent::BuildStarted {
                    build_id: b.id,
                    runner,
                    started_at: at,
                }]),
                other => Err(BuildError::NotQueued(other)),
            },
            (b, BuildAction::Finish { outcome, at }) => {
                let (BuildStatus::Running, Some(started)) = (b.status, b.started_at) else {
                    return Err(BuildError::NotRunning(b.status));
                };
                let duration_ms = millis_between(started, at);
                Ok(vec![match outcome {
                    Outcome::Succeeded => BuildEvent::BuildSucceeded {
                        build_id: b.id,
                        finished_at: at,
                        duration_ms,
                    },
                    Outcome::Failed {
                        exit_code,
                        reason,
                        message,
                    } => BuildEvent::BuildFailed {
                        build_id: b.id,
                        exit_code,
                        reason,
                        message,
                        finished_at: at,
                        duration_ms,
                    },
                }])
            }
            (b, BuildAction::Cancel { org_id, .. }) if b.org_id != org_id => {
                Err(BuildError::NotFound)
            }
            (b, BuildAction::Cancel { by, at, .. }) => match b.status {
                BuildStatus::Cancelled => Ok(vec![]),
                s if s.is_finished() => Err(BuildError::AlreadyFinished(s)),
                _ => Ok(vec![BuildEvent::BuildCancelled {
                    build_id: b.id,
                    by,
                    finished_at: at,
                    duration_ms: b.started_at.map(|s| millis_between(s, at)),
                }]),
            },
            (_, BuildAction::Queue { .. }) => Err(BuildError::AlreadyExists),
        }
    }

    fn evolve(self, event: &BuildEvent) -> Self {
        match (self, event) {
            (
                Build::Absent,
                BuildEvent::BuildQueued {
                    build_id,
                    org_id,
                    project_id,
                    project_revision,
                    repo_url,
                    build_command,
                    triggered_by,
                    restart_of,
                    queued_at,
                },
            ) => Build::Present(BuildData {
                id: *build_id,
                org_id: *org_id,
                project_id: *project_id,
                project_revision: *project_revision,
                repo_url: repo_url.clone(),
                build_command: build_command.clone(),
                triggered_by: triggered_by.clone(),
                restart_of: *restart_of,
                status: BuildStatus::Queued,
                queued_at: *queued_at,
                started_at: None,
                runner: None,
                finished_at: None,
                exit_code: None,
                failure: None,
            }),
            (
                Build::Present(b),
                BuildEvent::BuildStarted {
                    started_at, runner, ..
                },
            ) => Build::Present(BuildData {
                status: BuildStatus::Running,
                started_at: Some(*started_at),
                runner: Some(runner.clone()),
                ..b
            }),
            (Build::Present(b), BuildEvent::BuildSucceeded { finished_at, .. }) => {
                Build::Present(BuildData {
                    status: BuildStatus::Succeeded,
                    finished_at: Some(*finished_at),
                    exit_code: Some(0),
                    ..b
                })
            }
            (
                Build::Present(b),
                BuildEvent::BuildFailed {
                    exit_code,
                    reason,
                    finished_at,
                    ..
                },
            ) => Build::Present(BuildData {
                status: BuildStatus::Failed,
                finished_at: Some(*finished_at),
                exit_code: *exit_code,
                failure: Some(*reason),
                ..b
            }),
            (Build::Present(b), BuildEvent::BuildCancelled { finished_at, .. }) => {
                Build::Present(BuildData {
                    status: BuildStatus::Cancelled,
                    finished_at: Some(*finished_at),
                    ..b
                })
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::project::{ProjectEvent, ProjectName};
    use crate::testing::given;

    fn org() -> Uuid {
        Uuid::from_u128(1)
    }
    fn other_org() -> Uuid {
        Uuid::from_u128(2)
    }
    fn project_id() -> Uuid {
        Uuid::from_u128(10)
    }
    fn build_id() -> Uuid {
        Uuid::from_u128(20)
    }
    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }
    fn repo() -> RepoUrl {
        RepoUrl::parse("https://example.com/demo.git").unwrap()
    }
    fn make() -> Option<BuildCommand> {
        Some(BuildCommand::parse("make test").unwrap())
    }
    fn queued() -> BuildEvent {
        BuildEvent::BuildQueued {
            build_id: build_id(),
            org_id: org(),
            project_id: project_id(),
            project_revision: 3,
            repo_url: repo(),
            build_command: make(),
            triggered_by: "user-1".into(),
            restart_of: None,
            queued_at: at(0),
        }
    }
    fn started() -> BuildEvent {
        BuildEvent::BuildStarted {
            build_id: build_id(),
            runner: "runner-a".into(),
            started_at: at(5),
        }
    }
    fn succeeded() -> BuildEvent {
        BuildEvent::BuildSucceeded {
            build_id: build_id(),
            finished_at: at(65),
            duration_ms: 60_000,
        }
    }
    fn cancel(org_id: Uuid) -> BuildAction {
        BuildAction::Cancel {
            org_id,
            by: "user-2".into(),
            at: at(10),
        }
    }
    fn project(events: &[ProjectEvent]) -> Project {
        Project::fold(events)
    }
    fn project_created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            project_id: project_id(),
            org_id: org(),
            name: ProjectName::parse("Demo").unwrap(),
            repo_url: repo(),
            build_command: make(),
            created_at: at(-100),
        }
    }

    #[test]
    fn a_started_build_remembers_its_runner_after_it_is_cancelled() {
        let build = Build::fold(&[
            queued(),
            started(),
            BuildEvent::BuildCancelled {
                build_id: build_id(),
                by: "user-2".into(),
                finished_at: at(10),
                duration_ms: Some(5_000),
            },
        ]);
        assert_eq!(build.data().unwrap().runner.as_deref(), Some("runner-a"));
        assert_eq!(Build::fold(&[queued()]).data().unwrap().runner, None);
    }

    #[test]
    fn a_trigger_queues_the_project_as_it_is_now() {
        let action = project(&[project_created()])
            .trigger_build(3, org(), build_id(), "user-1".into(), at(0))
            .unwrap();
        given::<Build>([]).when(action).then([queued()]);
    }

    #[test]
    fn a_deleted_unknown_or_foreign_project_cannot_be_built() {
        let deleted = project(&[
            project_created(),
            ProjectEvent::ProjectDeleted {
                project_id: project_id(),
                deleted_at: at(-1),
            },
        ]);
        let trigger =
            |p: &Project, org_id| p.trigger_build(1, org_id, build_id(), "u".into(), at(0));
        assert_eq!(trigger(&deleted, org()), Err(BuildError::ProjectNotFound));
        assert_eq!(
            trigger(&Project::Absent, org()),
            Err(BuildError::ProjectNotFound)
        );
        assert_eq!(
            trigger(&project(&[project_created()]), other_org()),
            Err(BuildError::ProjectNotFound)
        );
    }

    #[test]
    fn a_queued_build_starts_once() {
        let start = BuildAction::Start {
            runner: "runner-a".into(),
            at: at(5),
        };
        given::<Build>([queued()])
            .when(start.clone())
            .then([started()]);
        given::<Build>([queued(), started()])
            .when(start.clone())
            .then_error(BuildError::NotQueued(BuildStatus::Running));
        given::<Build>([])
            .when(start)
            .then_error(BuildError::NotFound);
    }

    #[test]
    fn a_running_build_finishes_with_its_duration_and_exit_status() {
        given::<Build>([queued(), started()])
            .when(BuildAction::Finish {
                outcome: Outcome::Succeeded,
                at: at(65),
            })
            .then([succeeded()]);
        given::<Build>([queued(), started()])
            .when(BuildAction::Finish {
                outcome: Outcome::Failed {
                    exit_code: Some(2),
                    reason: FailureReason::ExitStatus,
                    message: "exited with status 2".into(),
                },
                at: at(7),
            })
            .then([BuildEvent::BuildFailed {
                build_id: build_id(),
                exit_code: Some(2),
                reason: FailureReason::ExitStatus,
                message: "exited with status 2".into(),
                finished_at: at(7),
                duration_ms: 2_000,
            }]);
    }

    #[test]
    fn a_build_that_is_not_running_cannot_finish() {
        let finish = BuildAction::Finish {
            outcome: Outcome::Succeeded,
            at: at(9),
        };
        given::<Build>([queued()])
            .when(finish.clone())
            .then_error(BuildError::NotRunning(BuildStatus::Queued));
        given::<Build>([
            queued(),
            started(),
            BuildEvent::BuildCancelled {
                build_id: build_id(),
                by: "user-2".into(),
                finished_at: at(8),
                duration_ms: Some(3_000),
            },
        ])
        .when(finish)
        .then_error(BuildError::NotRunning(BuildStatus::Cancelled));
    }

    #[test]
    fn a_queued_or_running_build_is_cancelled_and_a_second_cancel_changes_nothing() {
        given::<Build>([queued()])
            .when(cancel(org()))
            .then([BuildEvent::BuildCancelled {
                build_id: build_id(),
                by: "user-2".into(),
                finished_at: at(10),
                duration_ms: None,
            }]);
        let cancelled = BuildEvent::BuildCancelled {
            build_id: build_id(),
            by: "user-2".into(),
            finished_at: at(10),
            duration_ms: Some(5_000),
        };
        given::<Build>([queued(), started()])
            .when(cancel(org()))
            .then([cancelled.clone()]);
        given::<Build>([queued(), started(), cancelled])
            .when(cancel(org()))
            .then([]);
    }

    #[test]
    fn a_finished_or_foreign_build_cannot_be_cancelled() {
        given::<Build>([queued(), started(), succeeded()])
            .when(cancel(org()))
            .then_error(BuildError::AlreadyFinished(BuildStatus::Succeeded));
        given::<Build>([queued()])
            .when(cancel(other_org()))
            .then_error(BuildError::NotFound);
    }

    #[test]
    fn only_a_finished_build_is_restarted_as_a_new_linked_build() {
        let running = Build::fold(&[queued(), started()]);
        assert_eq!(
            running.restart(org(), Uuid::from_u128(21), "u".into(), at(70)),
            Err(BuildError::NotFinished)
        );
        let done = Build::fold(&[queued(), started(), succeeded()]);
        assert_eq!(
            done.restart(other_org(), Uuid::from_u128(21), "u".into(), at(70)),
            Err(BuildError::NotFound)
        );
        let action = done
            .restart(org(), Uuid::from_u128(21), "user-3".into(), at(70))
            .unwrap();
        given::<Build>([])
            .when(action)
            .then([BuildEvent::BuildQueued {
                build_id: Uuid::from_u128(21),
                org_id: org(),
                project_id: project_id(),
                project_revision: 3,
                repo_url: repo(),
                build_command: make(),
                triggered_by: "user-3".into(),
                restart_of: Some(build_id()),
                queued_at: at(70),
            }]);
    }

    #[test]
    fn the_state_follows_the_builds_life() {
        let b = Build::fold(&[queued(), started(), succeeded()]);
        let b = b.data().unwrap();
        assert_eq!(b.status, BuildStatus::Succeeded);
        assert_eq!((b.started_at, b.finished_at), (Some(at(5)), Some(at(65))));
        assert_eq!(b.exit_code, Some(0));
        for s in BuildStatus::ALL {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BuildStatus::parse("success"), None);
    }

    #[test]
    fn build_events_round_trip_through_their_stored_form() {
        for e in [queued(), started(), succeeded()] {
            let (ty, data) = e.encode();
            assert_eq!(BuildEvent::decode(&ty, &data).unwrap(), e);
        }
        for r in [
            FailureReason::ExitStatus,
            FailureReason::TimedOut,
            FailureReason::Error,
            FailureReason::Interrupted,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}

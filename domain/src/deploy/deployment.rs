//! A deployment: an app (a spec) provisioned and run by a provisioner driver, with the PaaS
//! seed's seven states and only the moves between them that make sense:
//!
//! ```text
//! pending → provisioning → deploying → running ⇄ stopped
//!    └──────────┴─────────────┴→ failed (an error, a cancel, an interrupted server)
//! running → failed (the app exited by itself)
//! running | stopped | failed → pending (redeploy, rollback)
//! any → deleted (what was provisioned is destroyed; the history stays)
//! ```
//!
//! Every spec a deployment ran is a numbered version (1, 2, …). Changing its variables makes a
//! new version; a rollback makes a new version that re-applies an earlier one, so the current
//! spec is always derived from the log and cannot drift from it.
//!
//! One runner acts on a deployment at a time: the one that claimed it (`DeploymentProvisioning`)
//! owns what it provisioned until that is destroyed (a failure, a delete), and only it starts,
//! stops and destroys it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::spec::{DeploymentSpec, EnvVar};
use crate::{Aggregate, DomainEvent};

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Waiting for a runner.
    Pending,
    /// Its infrastructure is being created.
    Provisioning,
    /// Its app is being deployed.
    Deploying,
    /// Its app runs.
    Running,
    /// It failed (see [`FailureReason`]).
    Failed,
    /// Stopped by someone.
    Stopped,
    /// Deleted.
    Deleted,
}

impl DeploymentStatus {
    /// Every status, in the order of a deployment's life.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Provisioning,
        Self::Deploying,
        Self::Running,
        Self::Failed,
        Self::Stopped,
        Self::Deleted,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Provisioning => "provisioning",
            Self::Deploying => "deploying",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
        }
    }

    /// Parses a status name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether a rollout is under way (a runner works on it).
    pub fn is_in_progress(self) -> bool {
        matches!(self, Self::Pending | Self::Provisioning | Self::Deploying)
    }

    /// Whether nothing more happens until someone acts (a followed log ends here).
    pub fn is_settled(self) -> bool {
        !self.is_in_progress()
    }
}

/// Why a deployment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The driver could not provision or deploy it (a clone, an install, an app that never
    /// answered…).
    Error,
    /// A step took longer than allowed.
    TimedOut,
    /// The server stopped while it was provisioned or deployed.
    Interrupted,
    /// Someone cancelled it.
    Cancelled,
    /// Its app exited while it ran.
    Exited,
}

impl FailureReason {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::TimedOut => "timed_out",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
            Self::Exited => "exited",
        }
    }
}

/// What a deployment holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeploymentData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Where it is.
    pub status: DeploymentStatus,
    /// Every spec it had: version `n` is `versions[n - 1]`.
    pub versions: Vec<DeploymentSpec>,
    /// The version it runs (or will run).
    pub version: u32,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The runner that owns what was provisioned (`None`: nothing is).
    pub runner: Option<String>,
    /// The driver that provisioned it.
    pub driver: Option<String>,
    /// Its address, once provisioned.
    pub ip_address: Option<String>,
    /// Its VM (or container) id, once provisioned.
    pub vm_id: Option<u32>,
    /// Where its app answers, once running.
    pub access_url: Option<String>,
    /// When it last reached `running`.
    pub deployed_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub failure: Option<FailureReason>,
    /// What went wrong, for people.
    pub error_message: Option<String>,
    /// Whether a deleted deployment's resources are gone.
    pub destroyed: bool,
}

impl DeploymentData {
    /// The spec it runs.
    pub fn spec(&self) -> &DeploymentSpec {
        &self.versions[self.version as usize - 1]
    }

    /// Whether a runner still holds resources for it.
    pub fn holds_resources(&self) -> bool {
        self.runner.is_some() && !self.destroyed
    }
}

/// The deployment aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one deployment is folded per command, by value"
)]
pub enum Deployment {
    /// Never created.
    #[default]
    Absent,
    /// Created (perhaps deleted since: its history stays readable).
    Present(DeploymentData),
}

impl Deployment {
    /// The deployment, if it exists.
    pub fn data(&self) -> Option<&DeploymentData> {
        match self {
            Self::Present(d) => Some(d),
            Self::Absent => None,
        }
    }

    /// The deployment, if it exists in `org_id`.
    pub fn visible_to(&self, org_id: Uuid) -> Option<&DeploymentData> {
        self.data().filter(|d| d.org_id == org_id)
    }
}

/// What can be asked of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentCommand {
    /// Create it (pending).
    Create {
        /// Its id.
        deployment_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// What it runs.
        spec: DeploymentSpec,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner takes a pending deployment.
    Claim {
        /// The runner.
        runner: String,
        /// Its driver.
        driver: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner's driver provisioned it.
    Provisioned {
        /// Its address.
        ip_address: String,
        /// Its VM id.
        vm_id: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner's driver has its app answering.
    Running {
        /// Where.
        access_url: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner reports a failure (what was provisioned is already destroyed).
    Fail {
        /// Why.
        reason: FailureReason,
        /// For people.
        message: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner destroyed what a deleted deployment had.
    Destroyed {
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone acts on it.
    Act {
        /// The organization acting.
        org_id: Uuid,
        /// What.
        action: Action,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What a person asks of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop its app (running → stopped).
    Stop,
    /// Start it again (stopped → deploying).
    Start,
    /// Cancel a rollout under way.
    Cancel,
    /// Deploy the current version again.
    Redeploy,
    /// Deploy an earlier version again (`None`: the one before the current).
    Rollback {
        /// The version.
        to_version: Option<u32>,
    },
    /// Replace its environment variables (a new version; a running deployment is redeployed).
    SetEnv {
        /// The variables.
        env: Vec<EnvVar>,
    },
    /// Delete it.
    Delete,
}

impl Action {
    /// Its name, in messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Cancel => "cancel",
            Self::Redeploy => "redeploy",
            Self::Rollback { .. } => "rollback",
            Self::SetEnv { .. } => "change the variables of",
            Self::Delete => "delete",
        }
    }
}

/// What happens to deployments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DeploymentEvent {
    /// Created, pending; its spec is version 1.
    DeploymentCreated {
        /// Its id.
        deployment_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// What it runs.
        spec: DeploymentSpec,
        /// Who.
        created_by: String,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A runner took it and provisions it.
    DeploymentProvisioning {
        /// Its id.
        deployment_id: Uuid,
        /// The runner.
        runner: String,
        /// Its driver.
        driver: String,
        /// The version it rolls out.
        version: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// Provisioned; its app is being deployed.
    DeploymentProvisioned {
        /// Its id.
        deployment_id: Uuid,
        /// Its address.
        ip_address: String,
        /// Its VM id.
        vm_id: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its app answers.
    DeploymentRunning {
        /// Its id.
        deployment_id: Uuid,
        /// Where.
        access_url: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// It failed; what was provisioned is gone.
    DeploymentFailed {
        /// Its id.
        deployment_id: Uuid,
        /// Why.
        reason: FailureReason,
        /// For people.
        message: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone cancelled its rollout (it is failed as cancelled).
    DeploymentCancelled {
        /// Its id.
        deployment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone stopped it.
    DeploymentStopped {
        /// Its id.
        deployment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone started it again; its runner deploys its app.
    DeploymentStarted {
        /// Its id.
        deployment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone asked for the current version to be deployed again.
    DeploymentRedeployed {
        /// Its id.
        deployment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Someone rolled it back: `version` is a new version re-applying `to_version`'s spec.
    DeploymentRolledBack {
        /// Its id.
        deployment_id: Uuid,
        /// The version it ran.
        from_version: u32,
        /// The version whose spec it re-applies.
        to_version: u32,
        /// The new version.
        version: u32,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its variables changed: `version` is the new version.
    DeploymentEnvChanged {
        /// Its id.
        deployment_id: Uuid,
        /// The variables (secrets by reference).
        env: Vec<EnvVar>,
        /// The new version.
        version: u32,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deleted.
    DeploymentDeleted {
        /// Its id.
        deployment_id: Uuid,
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its runner destroyed what it had provisioned.
    DeploymentDestroyed {
        /// Its id.
        deployment_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DeploymentEvent {}

/// Why a deployment command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeploymentError {
    /// No such deployment in this organization.
    #[error("the deployment does not exist")]
    NotFound,
    /// A deployment with this id exists.
    #[error("the deployment already exists")]
    AlreadyExists,
    /// What was asked does not apply in this state.
    #[error("cannot {action} a deployment that is {status:?}")]
    IllegalTransition {
        /// What was asked.
        action: &'static str,
        /// Where it is.
        status: DeploymentStatus,
    },
    /// A rollback to a version that does not exist (or is the current one).
    #[error("version {0} does not exist")]
    NoSuchVersion(u32),
    /// Another runner owns it.
    #[error("the deployment belongs to runner {0}")]
    OwnedElsewhere(String),
}

impl Aggregate for Deployment {
    type Command = DeploymentCommand;
    type Event = DeploymentEvent;
    type Error = DeploymentError;
    const CATEGORY: &'static str = "deployment";

    fn decide(&self, command: DeploymentCommand) -> Result<Vec<DeploymentEvent>, DeploymentError> {
        let d = match (self, command) {
            (
                Self::Absent,
                DeploymentCommand::Create {
                    deployment_id,
                    org_id,
                    spec,
                    by,
                    at,
                },
            ) => {
                return Ok(vec![DeploymentEvent::DeploymentCreated {
                    deployment_id,
                    org_id,
                    spec,
                    created_by: by,
                    created_at: at,
                }]);
            }
            (Self::Present(_), DeploymentCommand::Create { .. }) => {
                return Err(DeploymentError::AlreadyExists);
            }
            (Self::Absent, _) => return Err(DeploymentError::NotFound),
            (Self::Present(d), command) => (d, command),
        };
        let (d, command) = d;
        let id = d.id;
        let illegal = |action: &'static str| DeploymentError::IllegalTransition {
            action,
            status: d.status,
        };
        use DeploymentStatus as S;
        match command {
            DeploymentCommand::Create { .. } => Err(DeploymentError::AlreadyExists),
            DeploymentCommand::Claim { runner, driver, at } => {
                if d.status != S::Pending {
                    return Err(illegal("claim"));
                }
                if let Some(owner) = &d.runner
                    && *owner != runner
                {
                    return Err(DeploymentError::OwnedElsewhere(owner.clone()));
                }
                Ok(vec![DeploymentEvent::DeploymentProvisioning {
                    deployment_id: id,
                    runner,
                    driver,
                    version: d.version,
                    at,
                }])
            }
            DeploymentCommand::Provisioned {
                ip_address,
                vm_id,
                at,
            } => match d.status {
                S::Provisioning => Ok(vec![DeploymentEvent::DeploymentProvisioned {
                    deployment_id: id,
                    ip_address,
                    vm_id,
                    at,
                }]),
                _ => Err(illegal("provision")),
            },
            DeploymentCommand::Running { access_url, at } => match d.status {
                S::Deploying => Ok(vec![DeploymentEvent::DeploymentRunning {
                    deployment_id: id,
                    access_url,
                    at,
                }]),
                _ => Err(illegal("run")),
            },
            DeploymentCommand::Fail {
                reason,
                message,
                at,
            } => {
                let may_fail = match d.status {
                    S::Provisioning | S::Deploying => true,
                    // A pending one that cannot be provisioned at all (no driver takes it).
                    S::Pending => true,
                    S::Running => reason == FailureReason::Exited,
                    _ => false,
                };
                if !may_fail {
                    return Err(illegal("fail"));
                }
                Ok(vec![DeploymentEvent::DeploymentFailed {
                    deployment_id: id,
                    reason,
                    message,
                    at,
                }])
            }
            DeploymentCommand::Destroyed { at } => {
                if d.status != S::Deleted {
                    return Err(illegal("destroy"));
                }
                if d.destroyed {
                    return Ok(vec![]);
                }
                Ok(vec![DeploymentEvent::DeploymentDestroyed {
                    deployment_id: id,
                    at,
                }])
            }
            DeploymentCommand::Act { org_id, .. } if org_id != d.org_id => {
                Err(DeploymentError::NotFound)
            }
            DeploymentCommand::Act { action, by, at, .. } => {
                let name = action.as_str();
                match (action, d.status) {
                    (Action::Delete, S::Deleted) => Ok(vec![]),
                    (_, S::Deleted) => Err(illegal(name)),
                    (Action::Delete, _) => Ok(vec![DeploymentEvent::DeploymentDeleted {
                        deployment_id: id,
                        by,
                        at,
                    }]),
                    (Action::Stop, S::Stopped) => Ok(vec![]),
                    (Action::Stop, S::Running) => Ok(vec![DeploymentEvent::DeploymentStopped {
                        deployment_id: id,
                        by,
                        at,
                    }]),
                    (Action::Start, S::Running) => Ok(vec![]),
                    (Action::Start, S::Stopped) => Ok(vec![DeploymentEvent::DeploymentStarted {
                        deployment_id: id,
                        by,
                        at,
                    }]),
                    (Action::Cancel, S::Failed) if d.failure == Some(FailureReason::Cancelled) => {
                        Ok(vec![])
                    }
                    (Action::Cancel, s) if s.is_in_progress() => {
                        Ok(vec![DeploymentEvent::DeploymentCancelled {
                            deployment_id: id,
                            by,
                            at,
                        }])
                    }
                    (Action::Redeploy, S::Running | S::Stopped | S::Failed) => {
                        Ok(vec![DeploymentEvent::DeploymentRedeployed {
                            deployment_id: id,
                            by,
                            at,
                        }])
                    }
                    (Action::Rollback { to_version }, S::Running | S::Stopped | S::Failed) => {
                        let to = match to_version {
                            Some(v) => v,
                            None if d.version > 1 => d.version - 1,
                            None => return Err(DeploymentError::NoSuchVersion(0)),
                        };
                        if to == 0 || to as usize > d.versions.len() || to == d.version {
                            return Err(DeploymentError::NoSuchVersion(to));
                        }
                        Ok(vec![DeploymentEvent::DeploymentRolledBack {
                            deployment_id: id,
                            from_version: d.version,
                            to_version: to,
                            version: d.versions.len() as u32 + 1,
                            by,
                            at,
                        }])
                    }
                    (Action::SetEnv { env }, s) if !matches!(s, S::Provisioning | S::Deploying) => {
                        if env == d.spec().env {
                            return Ok(vec![]);
                        }
                        let mut events = vec![DeploymentEvent::DeploymentEnvChanged {
                            deployment_id: id,
                            env,
                            version: d.versions.len() as u32 + 1,
                            by: by.clone(),
                            at,
                        }];
                        // A running app takes its new variables now.
                        if s == S::Running {
                            events.push(DeploymentEvent::DeploymentRedeployed {
                                deployment_id: id,
                                by,
                                at,
                            });
                        }
                        Ok(events)
                    }
                    _ => Err(illegal(name)),
                }
            }
        }
    }

    fn evolve(self, event: &DeploymentEvent) -> Self {
        use DeploymentEvent as E;
        use DeploymentStatus as S;
        let mut d = match (self, event) {
            (
                Self::Absent,
                E::DeploymentCreated {
                    deployment_id,
                    org_id,
                    spec,
                    created_by,
                    created_at,
                },
            ) => {
                return Self::Present(DeploymentData {
                    id: *deployment_id,
                    org_id: *org_id,
                    status: S::Pending,
                    versions: vec![spec.clone()],
                    version: 1,
                    created_by: created_by.clone(),
                    created_at: *created_at,
                    updated_at: *created_at,
                    runner: None,
                    driver: None,
                    ip_address: None,
                    vm_id: None,
                    access_url: None,
                    deployed_at: None,
                    failure: None,
                    error_message: None,
                    destroyed: false,
                });
            }
            (Self::Present(d), _) => d,
            (state, _) => return state,
        };
        match event {
            E::DeploymentCreated { .. } => {}
            E::DeploymentProvisioning {
                runner, driver, at, ..
            } => {
                d.status = S::Provisioning;
                d.runner = Some(runner.clone());
                d.driver = Some(driver.clone());
                d.failure = None;
                d.error_message = None;
                d.updated_at = *at;
            }
            E::DeploymentProvisioned {
                ip_address,
                vm_id,
                at,
                ..
            } => {
                d.status = S::Deploying;
                d.ip_address = Some(ip_address.clone());
                d.vm_id = Some(*vm_id);
                d.updated_at = *at;
            }
            E::DeploymentRunning { access_url, at, .. } => {
                d.status = S::Running;
                d.access_url = Some(access_url.clone());
                d.deployed_at = Some(*at);
                d.updated_at = *at;
            }
            E::DeploymentFailed {
                reason,
                message,
                at,
                ..
            } => {
                d.status = S::Failed;
                d.failure = Some(*reason);
                d.error_message = Some(message.clone());
                released(&mut d);
                d.updated_at = *at;
            }
            E::DeploymentCancelled { at, .. } => {
                d.status = S::Failed;
                d.failure = Some(FailureReason::Cancelled);
                d.error_message = Some("cancelled".to_owned());
                // The runner destroys what it had provisioned when it sees the cancel.
                released(&mut d);
                d.updated_at = *at;
            }
            E::DeploymentStopped { at, .. } => {
                d.status = S::Stopped;
                d.updated_at = *at;
            }
            E::DeploymentStarted { at, .. } => {
                d.status = S::Deploying;
                d.access_url = None;
                d.updated_at = *at;
            }
            E::DeploymentRedeployed { at, .. } => {
                d.status = S::Pending;
                d.failure = None;
                d.error_message = None;
                d.updated_at = *at;
            }
            E::DeploymentRolledBack { to_version, at, .. } => {
                let spec = d.versions[*to_version as usize - 1].clone();
                d.versions.push(spec);
                d.version = d.versions.len() as u32;
                d.status = S::Pending;
                d.failure = None;
                d.error_message = None;
                d.updated_at = *at;
            }
            E::DeploymentEnvChanged { env, at, .. } => {
                let mut spec = d.spec().clone();
                spec.env = env.clone();
                d.versions.push(spec);
                d.version = d.versions.len() as u32;
                d.updated_at = *at;
            }
            E::DeploymentDeleted { at, .. } => {
                d.status = S::Deleted;
                d.access_url = None;
                d.destroyed = d.runner.is_none();
                d.updated_at = *at;
            }
            E::DeploymentDestroyed { at, .. } => {
                d.destroyed = true;
                released(&mut d);
                d.updated_at = *at;
            }
        }
        Self::Present(d)
    }
}

/// Nothing is provisioned any more: no runner owns it, its address may go to another.
fn released(d: &mut DeploymentData) {
    d.runner = None;
    d.ip_address = None;
    d.vm_id = None;
    d.access_url = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::spec::{DeploymentName, DeploymentType, GithubUrl, Resources};
    use crate::testing::given;

    fn org() -> Uuid {
        Uuid::from_u128(1)
    }
    fn id() -> Uuid {
        Uuid::from_u128(7)
    }
    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }
    fn spec() -> DeploymentSpec {
        DeploymentSpec {
            name: DeploymentName::parse("my-app").unwrap(),
            deployment_type: DeploymentType::Vm,
            framework: "django".into(),
            github_url: Some(GithubUrl::parse("https://github.com/user/repo").unwrap()),
            resources: Resources {
                cores: 2,
                memory: 2048,
                disk: 20,
            },
            target_id: None,
            env: vec![],
            stack: None,
        }
    }
    fn created() -> DeploymentEvent {
        DeploymentEvent::DeploymentCreated {
            deployment_id: id(),
            org_id: org(),
            spec: spec(),
            created_by: "u".into(),
            created_at: at(0),
        }
    }
    fn provisioning() -> DeploymentEvent {
        DeploymentEvent::DeploymentProvisioning {
            deployment_id: id(),
            runner: "r1".into(),
            driver: "simulated".into(),
            version: 1,
            at: at(1),
        }
    }
    fn provisioned() -> DeploymentEvent {
        DeploymentEvent::DeploymentProvisioned {
            deployment_id: id(),
            ip_address: "192.168.100.10".into(),
            vm_id: 100,
            at: at(2),
        }
    }
    fn running() -> DeploymentEvent {
        DeploymentEvent::DeploymentRunning {
            deployment_id: id(),
            access_url: "http://192.168.100.10:8000".into(),
            at: at(3),
        }
    }
    fn act(action: Action) -> DeploymentCommand {
        DeploymentCommand::Act {
            org_id: org(),
            action,
            by: "u".into(),
            at: at(10),
        }
    }
    fn live() -> Vec<DeploymentEvent> {
        vec![created(), provisioning(), provisioned(), running()]
    }
    fn with(mut events: Vec<DeploymentEvent>, more: DeploymentEvent) -> Vec<DeploymentEvent> {
        events.push(more);
        events
    }
    fn env(name: &str) -> Vec<EnvVar> {
        vec![EnvVar {
            name: name.into(),
            value: Some("1".into()),
            secret_ref: None,
        }]
    }

    #[test]
    fn a_deployment_goes_through_its_states_to_running() {
        given::<Deployment>([created()])
            .when(DeploymentCommand::Claim {
                runner: "r1".into(),
                driver: "simulated".into(),
                at: at(1),
            })
            .then([provisioning()]);
        given::<Deployment>([created(), provisioning()])
            .when(DeploymentCommand::Provisioned {
                ip_address: "192.168.100.10".into(),
                vm_id: 100,
                at: at(2),
            })
            .then([provisioned()]);
        given::<Deployment>([created(), provisioning(), provisioned()])
            .when(DeploymentCommand::Running {
                access_url: "http://192.168.100.10:8000".into(),
                at: at(3),
            })
            .then([running()]);
        let d = Deployment::fold(&live());
        let d = d.data().unwrap();
        assert_eq!(d.status, DeploymentStatus::Running);
        assert_eq!(d.ip_address.as_deref(), Some("192.168.100.10"));
        assert_eq!(d.vm_id, Some(100));
        assert_eq!(d.deployed_at, Some(at(3)));
    }

    #[test]
    fn states_cannot_be_skipped() {
        given::<Deployment>([created()])
            .when(DeploymentCommand::Running {
                access_url: "x".into(),
                at: at(1),
            })
            .then_error(DeploymentError::IllegalTransition {
                action: "run",
                status: DeploymentStatus::Pending,
            });
        given::<Deployment>(live())
            .when(DeploymentCommand::Claim {
                runner: "r1".into(),
                driver: "simulated".into(),
                at: at(5),
            })
            .then_error(DeploymentError::IllegalTransition {
                action: "claim",
                status: DeploymentStatus::Running,
            });
        given::<Deployment>([created(), provisioning()])
            .when(act(Action::Stop))
            .then_error(DeploymentError::IllegalTransition {
                action: "stop",
                status: DeploymentStatus::Provisioning,
            });
    }

    #[test]
    fn a_running_deployment_stops_and_starts_again_through_deploying() {
        let stopped = DeploymentEvent::DeploymentStopped {
            deployment_id: id(),
            by: "u".into(),
            at: at(10),
        };
        given::<Deployment>(live())
            .when(act(Action::Stop))
            .then([stopped.clone()]);
        given::<Deployment>(with(live(), stopped.clone()))
            .when(act(Action::Stop))
            .then([]);
        given::<Deployment>(with(live(), stopped.clone()))
            .when(act(Action::Start))
            .then([DeploymentEvent::DeploymentStarted {
                deployment_id: id(),
                by: "u".into(),
                at: at(10),
            }]);
        given::<Deployment>(live())
            .when(act(Action::Start))
            .then([]);
        let started = Deployment::fold(&with(
            with(live(), stopped),
            DeploymentEvent::DeploymentStarted {
                deployment_id: id(),
                by: "u".into(),
                at: at(11),
            },
        ));
        assert_eq!(started.data().unwrap().status, DeploymentStatus::Deploying);
        assert_eq!(started.data().unwrap().runner.as_deref(), Some("r1"));
    }

    #[test]
    fn a_rollout_under_way_is_cancelled_and_a_finished_one_is_not() {
        for events in [
            vec![created()],
            vec![created(), provisioning()],
            vec![created(), provisioning(), provisioned()],
        ] {
            given::<Deployment>(events.clone())
                .when(act(Action::Cancel))
                .then([DeploymentEvent::DeploymentCancelled {
                    deployment_id: id(),
                    by: "u".into(),
                    at: at(10),
                }]);
        }
        given::<Deployment>(live())
            .when(act(Action::Cancel))
            .then_error(DeploymentError::IllegalTransition {
                action: "cancel",
                status: DeploymentStatus::Running,
            });
        let cancelled = with(
            vec![created(), provisioning()],
            DeploymentEvent::DeploymentCancelled {
                deployment_id: id(),
                by: "u".into(),
                at: at(10),
            },
        );
        given::<Deployment>(cancelled.clone())
            .when(act(Action::Cancel))
            .then([]);
        let d = Deployment::fold(&cancelled);
        let d = d.data().unwrap();
        assert_eq!(
            (d.status, d.failure),
            (DeploymentStatus::Failed, Some(FailureReason::Cancelled))
        );
        assert_eq!(d.runner, None);
    }

    #[test]
    fn a_rollback_re_applies_an_earlier_version_as_a_new_one() {
        let changed = DeploymentEvent::DeploymentEnvChanged {
            deployment_id: id(),
            env: env("DEBUG"),
            version: 2,
            by: "u".into(),
            at: at(5),
        };
        let stopped = DeploymentEvent::DeploymentStopped {
            deployment_id: id(),
            by: "u".into(),
            at: at(6),
        };
        let history = vec![
            created(),
            provisioning(),
            provisioned(),
            running(),
            stopped.clone(),
            changed,
        ];
        let rolled_back = DeploymentEvent::DeploymentRolledBack {
            deployment_id: id(),
            from_version: 2,
            to_version: 1,
            version: 3,
            by: "u".into(),
            at: at(10),
        };
        given::<Deployment>(history.clone())
            .when(act(Action::Rollback { to_version: None }))
            .then([rolled_back.clone()]);
        given::<Deployment>(history.clone())
            .when(act(Action::Rollback {
                to_version: Some(1),
            }))
            .then([rolled_back.clone()]);
        for bad in [0, 2, 3, 9] {
            given::<Deployment>(history.clone())
                .when(act(Action::Rollback {
                    to_version: Some(bad),
                }))
                .then_error(DeploymentError::NoSuchVersion(bad));
        }
        given::<Deployment>(live())
            .when(act(Action::Rollback { to_version: None }))
            .then_error(DeploymentError::NoSuchVersion(0));
        let d = Deployment::fold(&with(history, rolled_back));
        let d = d.data().unwrap();
        assert_eq!(d.version, 3);
        assert_eq!(d.versions.len(), 3);
        assert_eq!(d.spec(), &spec());
        assert_eq!(d.status, DeploymentStatus::Pending);
        assert_eq!(
            d.runner.as_deref(),
            Some("r1"),
            "the owner keeps its resources"
        );
    }

    #[test]
    fn new_variables_make_a_new_version_and_redeploy_a_running_app() {
        given::<Deployment>(live())
            .when(act(Action::SetEnv { env: env("A") }))
            .then([
                DeploymentEvent::DeploymentEnvChanged {
                    deployment_id: id(),
                    env: env("A"),
                    version: 2,
                    by: "u".into(),
                    at: at(10),
                },
                DeploymentEvent::DeploymentRedeployed {
                    deployment_id: id(),
                    by: "u".into(),
                    at: at(10),
                },
            ]);
        given::<Deployment>([created()])
            .when(act(Action::SetEnv { env: vec![] }))
            .then([]);
        given::<Deployment>([created(), provisioning()])
            .when(act(Action::SetEnv { env: env("A") }))
            .then_error(DeploymentError::IllegalTransition {
                action: "change the variables of",
                status: DeploymentStatus::Provisioning,
            });
    }

    #[test]
    fn a_deleted_deployment_keeps_its_history_and_refuses_everything_but_delete() {
        let deleted = with(
            live(),
            DeploymentEvent::DeploymentDeleted {
                deployment_id: id(),
                by: "u".into(),
                at: at(10),
            },
        );
        let d = Deployment::fold(&deleted);
        let data = d.data().unwrap();
        assert_eq!(data.status, DeploymentStatus::Deleted);
        assert!(!data.destroyed, "the runner has yet to destroy it");
        assert!(data.holds_resources());
        given::<Deployment>(deleted.clone())
            .when(act(Action::Delete))
            .then([]);
        given::<Deployment>(deleted.clone())
            .when(act(Action::Start))
            .then_error(DeploymentError::IllegalTransition {
                action: "start",
                status: DeploymentStatus::Deleted,
            });
        given::<Deployment>(deleted.clone())
            .when(DeploymentCommand::Destroyed { at: at(11) })
            .then([DeploymentEvent::DeploymentDestroyed {
                deployment_id: id(),
                at: at(11),
            }]);
        let never_claimed = Deployment::fold(&[
            created(),
            DeploymentEvent::DeploymentDeleted {
                deployment_id: id(),
                by: "u".into(),
                at: at(1),
            },
        ]);
        assert!(never_claimed.data().unwrap().destroyed);
    }

    #[test]
    fn only_the_owner_claims_what_it_provisioned_and_another_org_sees_nothing() {
        let redeployed = with(
            live(),
            DeploymentEvent::DeploymentRedeployed {
                deployment_id: id(),
                by: "u".into(),
                at: at(10),
            },
        );
        given::<Deployment>(redeployed.clone())
            .when(DeploymentCommand::Claim {
                runner: "r2".into(),
                driver: "simulated".into(),
                at: at(11),
            })
            .then_error(DeploymentError::OwnedElsewhere("r1".into()));
        given::<Deployment>(live())
            .when(DeploymentCommand::Act {
                org_id: Uuid::from_u128(2),
                action: Action::Stop,
                by: "x".into(),
                at: at(10),
            })
            .then_error(DeploymentError::NotFound);
        assert!(
            Deployment::fold(&live())
                .visible_to(Uuid::from_u128(2))
                .is_none()
        );
    }

    #[test]
    fn a_running_app_fails_only_when_it_exits() {
        let fail = |reason| DeploymentCommand::Fail {
            reason,
            message: "m".into(),
            at: at(9),
        };
        given::<Deployment>(live())
            .when(fail(FailureReason::Error))
            .then_error(DeploymentError::IllegalTransition {
                action: "fail",
                status: DeploymentStatus::Running,
            });
        given::<Deployment>(live())
            .when(fail(FailureReason::Exited))
            .then([DeploymentEvent::DeploymentFailed {
                deployment_id: id(),
                reason: FailureReason::Exited,
                message: "m".into(),
                at: at(9),
            }]);
    }

    #[test]
    fn deployment_events_round_trip_through_their_stored_form() {
        for e in live() {
            let (ty, data) = e.encode();
            assert_eq!(DeploymentEvent::decode(&ty, &data).unwrap(), e);
        }
        for s in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
        }
    }
}

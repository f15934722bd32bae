//! A stack: WindFlow's named container configuration (a docker compose document), every change
//! of its configuration a new numbered version, who or what suggested it (a person, or the
//! assistant: which engine, which model, the request's hash) kept with it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, folded, name_key, text, unique_name};
use crate::{Aggregate, DomainEvent};

/// Longest stack name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A stack's name: NFKC-normalized, trimmed, 1 to 100 characters, unique within its
/// organization by [`StackName::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StackName(String);

impl StackName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        unique_name("name", raw, 1, MAX_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes it unique within the organization.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }

    /// How it sorts.
    pub fn sort_key(&self) -> String {
        folded(&self.0)
    }
}

/// A description: up to 1000 characters of visible text (may be empty).
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    text("description", raw, 0, MAX_DESCRIPTION_CHARS)
}

/// Who proposed a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Origin {
    /// A person (or a key) wrote it.
    Manual,
    /// The assistant suggested it.
    Assistant(Suggestion),
}

/// What the assistant answered from, so that the audit can say why a stack changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    /// `offline` or `llm`.
    pub engine: String,
    /// The model that answered (`None` for the offline engine).
    pub model: Option<String>,
    /// SHA-256 of the request the assistant was given (hex).
    pub request_hash: String,
    /// What it did: `generate` or `optimize`.
    pub kind: String,
    /// What it changed or assumed, one line each.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Where a stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackStatus {
    /// Its configuration passed validation.
    Valid,
    /// Its configuration has validation errors (it can be saved, not deployed).
    Invalid,
    /// A version of it was deployed.
    Deployed,
}

/// What a live stack holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: StackName,
    /// Its description.
    pub description: String,
    /// Its configuration: a compose document, as a JSON mapping.
    pub configuration: serde_json::Value,
    /// The configuration's version, from 1: each change is a new one.
    pub version: u32,
    /// Whether the current version passed validation.
    pub valid: bool,
    /// Whether the current version is the assistant's optimization.
    pub llm_optimized: bool,
    /// Who proposed the current version.
    pub origin: Origin,
    /// When a version was last deployed.
    pub last_deployed_at: Option<DateTime<Utc>>,
    /// Which version was.
    pub deployed_version: Option<u32>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl StackStatus {
    /// The status of a stack at `version`, whether that version is valid, and which version
    /// was last deployed: deployed only while the deployed version is the current one.
    pub fn of(valid: bool, version: u32, deployed_version: Option<u32>) -> Self {
        match (valid, deployed_version) {
            (false, _) => StackStatus::Invalid,
            (true, Some(deployed)) if deployed == version => StackStatus::Deployed,
            (true, _) => StackStatus::Valid,
        }
    }

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            StackStatus::Valid => "valid",
            StackStatus::Invalid => "invalid",
            StackStatus::Deployed => "deployed",
        }
    }
}

impl StackData {
    /// Its status.
    pub fn status(&self) -> StackStatus {
        StackStatus::of(self.valid, self.version, self.deployed_version)
    }
}

/// The stack aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Stack {
    /// Never created.
    #[default]
    Absent,
    /// Created and not deleted.
    Present(Box<StackData>),
    /// Deleted; its id is never reused.
    Deleted {
        /// Its organization.
        org_id: Uuid,
    },
}

impl Stack {
    /// The live stack, if any.
    pub fn present(&self) -> Option<&StackData> {
        match self {
            Stack::Present(s) => Some(s),
            _ => None,
        }
    }

    fn owned_by(&self, org_id: Uuid) -> Option<&StackData> {
        self.present().filter(|s| s.org_id == org_id)
    }
}

/// What can be asked of a stack. Every command names the organization acting: another's stack
/// is not found.
#[derive(Debug, Clone, PartialEq)]
pub enum StackCommand {
    /// Create it.
    Create {
        /// Its id.
        stack_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name (unique: a reservation checks it).
        name: StackName,
        /// Its description.
        description: String,
        /// Its configuration.
        configuration: serde_json::Value,
        /// Whether it passed validation.
        valid: bool,
        /// Who proposed it.
        origin: Origin,
        /// When.
        at: DateTime<Utc>,
    },
    /// Change its name or description (not a new version).
    Describe {
        /// The organization acting.
        org_id: Uuid,
        /// The new name, if any.
        name: Option<StackName>,
        /// The new description, if any.
        description: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A new version of its configuration.
    Configure {
        /// The organization acting.
        org_id: Uuid,
        /// The configuration.
        configuration: serde_json::Value,
        /// Whether it passed validation.
        valid: bool,
        /// Whether it is the assistant's optimization.
        llm_optimized: bool,
        /// Who proposed it.
        origin: Origin,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record that a version was deployed.
    MarkDeployed {
        /// The organization acting.
        org_id: Uuid,
        /// The version.
        version: u32,
        /// The deployment.
        deployment_id: Uuid,
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

/// What happens to stacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum StackEvent {
    /// A stack was created (version 1).
    StackCreated {
        /// Its id.
        stack_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name.
        name: StackName,
        /// Its description.
        description: String,
        /// Its configuration.
        configuration: serde_json::Value,
        /// Whether it passed validation.
        valid: bool,
        /// Who proposed it.
        origin: Origin,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// Its name or description changed.
    StackDescribed {
        /// Its id.
        stack_id: Uuid,
        /// The new name, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<StackName>,
        /// The new description, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A new version of its configuration.
    StackConfigured {
        /// Its id.
        stack_id: Uuid,
        /// The new version.
        version: u32,
        /// The configuration.
        configuration: serde_json::Value,
        /// Whether it passed validation.
        valid: bool,
        /// Whether it is the assistant's optimization.
        llm_optimized: bool,
        /// Who proposed it.
        origin: Origin,
        /// When.
        at: DateTime<Utc>,
    },
    /// A version was deployed.
    StackDeployed {
        /// Its id.
        stack_id: Uuid,
        /// The version.
        version: u32,
        /// The deployment that runs it.
        deployment_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was deleted.
    StackDeleted {
        /// Its id.
        stack_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for StackEvent {}

/// Why a stack command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    /// A stack with this id exists (or existed).
    #[error("the stack already exists")]
    AlreadyExists,
    /// No such stack in this organization.
    #[error("the stack does not exist")]
    NotFound,
    /// The version to deploy is not the current one, or is invalid.
    #[error("{0}")]
    NotDeployable(String),
}

impl Aggregate for Stack {
    type Command = StackCommand;
    type Event = StackEvent;
    type Error = StackError;
    const CATEGORY: &'static str = "stack";

    fn decide(&self, command: StackCommand) -> Result<Vec<StackEvent>, StackError> {
        use StackCommand as C;
        use StackEvent as E;
        match command {
            C::Create {
                stack_id,
                org_id,
                name,
                description,
                configuration,
                valid,
                origin,
                at,
            } => match self {
                Stack::Absent => Ok(vec![E::StackCreated {
                    stack_id,
                    org_id,
                    name,
                    description,
                    configuration,
                    valid,
                    origin,
                    created_at: at,
                }]),
                _ => Err(StackError::AlreadyExists),
            },
            C::Describe {
                org_id,
                name,
                description,
                at,
            } => {
                let s = self.owned_by(org_id).ok_or(StackError::NotFound)?;
                let name = name.filter(|n| *n != s.name);
                let description = description.filter(|d| *d != s.description);
                if name.is_none() && description.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![E::StackDescribed {
                    stack_id: s.id,
                    name,
                    description,
                    at,
                }])
            }
            C::Configure {
                org_id,
                configuration,
                valid,
                llm_optimized,
                origin,
                at,
            } => {
                let s = self.owned_by(org_id).ok_or(StackError::NotFound)?;
                if s.configuration == configuration && s.llm_optimized == llm_optimized {
                    return Ok(vec![]);
                }
                Ok(vec![E::StackConfigured {
                    stack_id: s.id,
                    version: s.version + 1,
                    configuration,
                    valid,
                    llm_optimized,
                    origin,
                    at,
                }])
            }
            C::MarkDeployed {
                org_id,
                version,
                deployment_id,
                at,
            } => {
                let s = self.owned_by(org_id).ok_or(StackError::NotFound)?;
                if version != s.version {
                    return Err(StackError::NotDeployable(format!(
                        "version {version} is not the stack's current version ({})",
                        s.version
                    )));
                }
                if !s.valid {
                    return Err(StackError::NotDeployable(format!(
                        "version {version} does not pass validation"
                    )));
                }
                Ok(vec![E::StackDeployed {
                    stack_id: s.id,
                    version,
                    deployment_id,
                    at,
                }])
            }
            C::Delete { org_id, at } => {
                let s = self.owned_by(org_id).ok_or(StackError::NotFound)?;
                Ok(vec![E::StackDeleted { stack_id: s.id, at }])
            }
        }
    }

    fn evolve(self, event: &StackEvent) -> Self {
        use StackEvent as E;
        match (self, event) {
            (
                Stack::Absent,
                E::StackCreated {
                    stack_id,
                    org_id,
                    name,
                    description,
                    configuration,
                    valid,
                    origin,
                    created_at,
                },
            ) => Stack::Present(Box::new(StackData {
                id: *stack_id,
                org_id: *org_id,
                name: name.clone(),
                description: description.clone(),
                configuration: configuration.clone(),
                version: 1,
                valid: *valid,
                llm_optimized: false,
                origin: origin.clone(),
                last_deployed_at: None,
                deployed_version: None,
                created_at: *created_at,
                updated_at: *created_at,
            })),
            (
                Stack::Present(mut s),
                E::StackDescribed {
                    name,
                    description,
                    at,
                    ..
                },
            ) => {
                if let Some(name) = name {
                    s.name = name.clone();
                }
                if let Some(description) = description {
                    s.description = description.clone();
                }
                s.updated_at = *at;
                Stack::Present(s)
            }
            (
                Stack::Present(mut s),
                E::StackConfigured {
                    version,
                    configuration,
                    valid,
                    llm_optimized,
                    origin,
                    at,
                    ..
                },
            ) => {
                s.version = *version;
                s.configuration = configuration.clone();
                s.valid = *valid;
                s.llm_optimized = *llm_optimized;
                s.origin = origin.clone();
                s.updated_at = *at;
                Stack::Present(s)
            }
            (Stack::Present(mut s), E::StackDeployed { version, at, .. }) => {
                s.deployed_version = Some(*version);
                s.last_deployed_at = Some(*at);
                Stack::Present(s)
            }
            (Stack::Present(s), E::StackDeleted { .. }) => Stack::Deleted { org_id: s.org_id },
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use serde_json::json;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }
    fn org() -> Uuid {
        Uuid::from_u128(1)
    }
    fn t(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap()
    }
    fn config() -> serde_json::Value {
        json!({"services": {"web": {"image": "nginx:1.27"}}})
    }
    fn created() -> StackEvent {
        StackEvent::StackCreated {
            stack_id: id(),
            org_id: org(),
            name: StackName::parse("shop").unwrap(),
            description: "the shop".into(),
            configuration: config(),
            valid: true,
            origin: Origin::Manual,
            created_at: t(0),
        }
    }
    fn suggestion() -> Origin {
        Origin::Assistant(Suggestion {
            engine: "offline".into(),
            model: None,
            request_hash: "ab".repeat(32),
            kind: "optimize".into(),
            notes: vec!["restart: unless-stopped".into()],
        })
    }

    #[test]
    fn each_configuration_change_is_a_new_version_with_who_proposed_it() {
        let optimized =
            json!({"services": {"web": {"image": "nginx:1.27", "restart": "unless-stopped"}}});
        given::<Stack>([created()])
            .when(StackCommand::Configure {
                org_id: org(),
                configuration: optimized.clone(),
                valid: true,
                llm_optimized: true,
                origin: suggestion(),
                at: t(1),
            })
            .then([StackEvent::StackConfigured {
                stack_id: id(),
                version: 2,
                configuration: optimized,
                valid: true,
                llm_optimized: true,
                origin: suggestion(),
                at: t(1),
            }]);
    }

    #[test]
    fn the_same_configuration_again_changes_nothing() {
        given::<Stack>([created()])
            .when(StackCommand::Configure {
                org_id: org(),
                configuration: config(),
                valid: true,
                llm_optimized: false,
                origin: Origin::Manual,
                at: t(1),
            })
            .then([]);
    }

    #[test]
    fn only_the_current_valid_version_is_deployed_and_the_status_follows() {
        let g = given::<Stack>([created()]);
        assert_eq!(g.state().present().unwrap().status(), StackStatus::Valid);
        given::<Stack>([created()])
            .when(StackCommand::MarkDeployed {
                org_id: org(),
                version: 2,
                deployment_id: Uuid::from_u128(9),
                at: t(1),
            })
            .then_error(StackError::NotDeployable(
                "version 2 is not the stack's current version (1)".into(),
            ));
        let deployed = given::<Stack>([
            created(),
            StackEvent::StackDeployed {
                stack_id: id(),
                version: 1,
                deployment_id: Uuid::from_u128(9),
                at: t(2),
            },
        ]);
        let s = deployed.state().present().unwrap();
        assert_eq!(s.status(), StackStatus::Deployed);
        assert_eq!(s.last_deployed_at, Some(t(2)));
        let invalid = StackEvent::StackConfigured {
            stack_id: id(),
            version: 2,
            configuration: json!({"services": {"web": {}}}),
            valid: false,
            llm_optimized: false,
            origin: Origin::Manual,
            at: t(3),
        };
        given::<Stack>([created(), invalid.clone()])
            .when(StackCommand::MarkDeployed {
                org_id: org(),
                version: 2,
                deployment_id: Uuid::from_u128(9),
                at: t(4),
            })
            .then_error(StackError::NotDeployable(
                "version 2 does not pass validation".into(),
            ));
    }

    #[test]
    fn another_organization_cannot_see_or_touch_a_stack() {
        given::<Stack>([created()])
            .when(StackCommand::Delete {
                org_id: Uuid::from_u128(2),
                at: t(1),
            })
            .then_error(StackError::NotFound);
    }

    #[test]
    fn a_rename_records_the_name_alone() {
        given::<Stack>([created()])
            .when(StackCommand::Describe {
                org_id: org(),
                name: Some(StackName::parse("store").unwrap()),
                description: Some("the shop".into()),
                at: t(1),
            })
            .then([StackEvent::StackDescribed {
                stack_id: id(),
                name: Some(StackName::parse("store").unwrap()),
                description: None,
                at: t(1),
            }]);
    }
}

//! A target: where an organization deploys (WindFlow's deployment environments: dev, staging,
//! prod…), named uniquely within the organization.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, folded, invalid, name_key, text, unique_name};
use crate::{Aggregate, DomainEvent};

/// Longest target name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A target's name: 1 to 100 characters, unique within the organization by its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetName(String);

impl TargetName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        unique_name("name", raw, 1, MAX_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes it unique (case, spacing and look-alikes aside).
    pub fn key(&self) -> String {
        name_key(&self.0)
    }

    /// How it sorts.
    pub fn sort_key(&self) -> String {
        folded(&self.0)
    }
}

/// What kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Development.
    Dev,
    /// Staging.
    Staging,
    /// Production.
    Prod,
    /// Anything else.
    Custom,
}

impl TargetKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::Dev, Self::Staging, Self::Prod, Self::Custom];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Staging => "staging",
            Self::Prod => "prod",
            Self::Custom => "custom",
        }
    }

    /// Parses a kind.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == raw)
            .ok_or_else(|| invalid("kind", "must be one of dev, staging, prod, custom"))
    }
}

/// A description: at most 500 characters.
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    text("description", raw, 0, MAX_DESCRIPTION_CHARS)
}

/// A target's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFields {
    /// Its name.
    pub name: TargetName,
    /// Its kind.
    pub kind: TargetKind,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// What a target holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its fields.
    pub fields: TargetFields,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// The target aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Target {
    /// Never created.
    #[default]
    Absent,
    /// Created.
    Present(TargetData),
}

impl Target {
    /// The target, if it exists and was not deleted.
    pub fn active(&self) -> Option<&TargetData> {
        match self {
            Self::Present(t) if !t.deleted => Some(t),
            _ => None,
        }
    }

    /// The live target, if it is `org_id`'s.
    pub fn visible_to(&self, org_id: Uuid) -> Option<&TargetData> {
        self.active().filter(|t| t.org_id == org_id)
    }
}

/// What can be asked of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCommand {
    /// Create it.
    Create {
        /// Its id.
        target_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its fields.
        fields: TargetFields,
        /// When.
        at: DateTime<Utc>,
    },
    /// Replace its fields.
    Update {
        /// The organization acting.
        org_id: Uuid,
        /// The fields.
        fields: TargetFields,
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

/// What happens to targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TargetEvent {
    /// Created.
    TargetCreated {
        /// Its id.
        target_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its fields.
        fields: TargetFields,
        /// When.
        at: DateTime<Utc>,
    },
    /// Its fields changed.
    TargetUpdated {
        /// Its id.
        target_id: Uuid,
        /// The fields.
        fields: TargetFields,
        /// When.
        at: DateTime<Utc>,
    },
    /// Deleted.
    TargetDeleted {
        /// Its id.
        target_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for TargetEvent {}

/// Why a target command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No such target in this organization.
    #[error("the target does not exist")]
    NotFound,
    /// It exists already.
    #[error("the target already exists")]
    AlreadyExists,
}

impl Aggregate for Target {
    type Command = TargetCommand;
    type Event = TargetEvent;
    type Error = TargetError;
    const CATEGORY: &'static str = "target";

    fn decide(&self, command: TargetCommand) -> Result<Vec<TargetEvent>, TargetError> {
        match (self, command) {
            (
                Self::Absent,
                TargetCommand::Create {
                    target_id,
                    org_id,
                    fields,
                    at,
                },
            ) => Ok(vec![TargetEvent::TargetCreated {
                target_id,
                org_id,
                fields,
                at,
            }]),
            (Self::Present(_), TargetCommand::Create { .. }) => Err(TargetError::AlreadyExists),
            (state, TargetCommand::Update { org_id, fields, at }) => {
                let t = state.visible_to(org_id).ok_or(TargetError::NotFound)?;
                if t.fields == fields {
                    return Ok(vec![]);
                }
                Ok(vec![TargetEvent::TargetUpdated {
                    target_id: t.id,
                    fields,
                    at,
                }])
            }
            (state, TargetCommand::Delete { org_id, at }) => {
                let t = state.visible_to(org_id).ok_or(TargetError::NotFound)?;
                Ok(vec![TargetEvent::TargetDeleted {
                    target_id: t.id,
                    at,
                }])
            }
        }
    }

    fn evolve(self, event: &TargetEvent) -> Self {
        match (self, event) {
            (
                Self::Absent,
                TargetEvent::TargetCreated {
                    target_id,
                    org_id,
                    fields,
                    at,
                },
            ) => Self::Present(TargetData {
                id: *target_id,
                org_id: *org_id,
                fields: fields.clone(),
                created_at: *at,
                updated_at: *at,
                deleted: false,
            }),
            (Self::Present(t), TargetEvent::TargetUpdated { fields, at, .. }) => {
                Self::Present(TargetData {
                    fields: fields.clone(),
                    updated_at: *at,
                    ..t
                })
            }
            (Self::Present(t), TargetEvent::TargetDeleted { at, .. }) => {
                Self::Present(TargetData {
                    deleted: true,
                    updated_at: *at,
                    ..t
                })
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
    fn fields(name: &str, kind: TargetKind) -> TargetFields {
        TargetFields {
            name: TargetName::parse(name).unwrap(),
            kind,
            description: String::new(),
        }
    }
    fn created() -> TargetEvent {
        TargetEvent::TargetCreated {
            target_id: Uuid::from_u128(3),
            org_id: Uuid::from_u128(1),
            fields: fields("staging", TargetKind::Staging),
            at: at(0),
        }
    }

    #[test]
    fn a_target_is_created_updated_and_deleted_in_its_organization_only() {
        given::<Target>([])
            .when(TargetCommand::Create {
                target_id: Uuid::from_u128(3),
                org_id: Uuid::from_u128(1),
                fields: fields("staging", TargetKind::Staging),
                at: at(0),
            })
            .then([created()]);
        given::<Target>([created()])
            .when(TargetCommand::Update {
                org_id: Uuid::from_u128(1),
                fields: fields("staging", TargetKind::Staging),
                at: at(1),
            })
            .then([]);
        given::<Target>([created()])
            .when(TargetCommand::Update {
                org_id: Uuid::from_u128(2),
                fields: fields("prod", TargetKind::Prod),
                at: at(1),
            })
            .then_error(TargetError::NotFound);
        let deleted = TargetEvent::TargetDeleted {
            target_id: Uuid::from_u128(3),
            at: at(2),
        };
        given::<Target>([created()])
            .when(TargetCommand::Delete {
                org_id: Uuid::from_u128(1),
                at: at(2),
            })
            .then([deleted.clone()]);
        given::<Target>([created(), deleted])
            .when(TargetCommand::Delete {
                org_id: Uuid::from_u128(1),
                at: at(3),
            })
            .then_error(TargetError::NotFound);
    }

    #[test]
    fn kinds_are_the_four_windflow_knows() {
        for k in TargetKind::ALL {
            assert_eq!(TargetKind::parse(k.as_str()), Ok(k));
        }
        assert!(TargetKind::parse("production").is_err());
    }
}

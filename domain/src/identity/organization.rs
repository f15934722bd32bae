//! An organization: the tenant every other resource belongs to, with its members and their
//! roles. Membership lives in the organization's stream, so "an organization always keeps an
//! owner" is one aggregate's rule, checked in one place.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Actor, Permission, Role};
use crate::value::{InvalidValue, folded, invalid, name_key, text, unique_name};
use crate::{Aggregate, DomainEvent};

/// Shortest and longest organization name, in characters (WindFlow's `OrganizationCreate`).
pub const NAME_CHARS: (usize, usize) = (2, 100);
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Largest settings or quotas object, serialized, in bytes.
pub const MAX_OBJECT_BYTES: usize = 16 * 1024;

/// An organization's name: NFKC-normalized, trimmed, 2 to 100 characters, no control,
/// invisible or bidirectional control characters; unique on the platform by [`OrgName::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgName(String);

impl OrgName {
    /// Parses a name from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        unique_name("name", raw, NAME_CHARS.0, NAME_CHARS.1).map(Self)
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

/// Free-form settings or quotas: a JSON object of at most [`MAX_OBJECT_BYTES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonObject(serde_json::Map<String, serde_json::Value>);

impl JsonObject {
    /// Parses a settings or quotas value (`null` is empty).
    pub fn parse(field: &'static str, raw: &serde_json::Value) -> Result<Self, InvalidValue> {
        match raw {
            serde_json::Value::Null => Ok(Self::default()),
            serde_json::Value::Object(map) => {
                if raw.to_string().len() > MAX_OBJECT_BYTES {
                    return Err(invalid(
                        field,
                        format!("must be at most {MAX_OBJECT_BYTES} bytes of JSON"),
                    ));
                }
                Ok(Self(map.clone()))
            }
            _ => Err(invalid(field, "must be a JSON object")),
        }
    }

    /// The object.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

/// What an organization describes of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgProfile {
    /// Its name, unique on the platform (checked by a reservation).
    pub name: OrgName,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form settings.
    #[serde(default)]
    pub settings: JsonObject,
    /// Free-form quotas.
    #[serde(default)]
    pub quotas: JsonObject,
}

impl OrgProfile {
    /// Parses a description (trimmed, at most 500 characters; empty is none).
    pub fn description(raw: Option<&str>) -> Result<Option<String>, InvalidValue> {
        match raw {
            None => Ok(None),
            Some(d) => {
                let d = text("description", d, 0, MAX_DESCRIPTION_CHARS)?;
                Ok((!d.is_empty()).then_some(d))
            }
        }
    }
}

/// A live organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrgData {
    /// Its id.
    pub id: Uuid,
    /// What it says of itself.
    pub profile: OrgProfile,
    /// Whether it may be used (a deactivated organization's members cannot act in it).
    pub is_active: bool,
    /// Its members and their roles.
    pub members: BTreeMap<Uuid, Role>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl OrgData {
    fn owners(&self) -> usize {
        self.members.values().filter(|r| **r == Role::Owner).count()
    }
}

/// The organization aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Organization {
    /// Never created.
    #[default]
    Absent,
    /// Created and not deleted.
    Present(OrgData),
    /// Deleted; its id is never reused.
    Deleted,
}

impl Organization {
    /// The organization, unless absent or deleted.
    pub fn data(&self) -> Option<&OrgData> {
        match self {
            Organization::Present(o) => Some(o),
            _ => None,
        }
    }

    /// A member's role, if they are one.
    pub fn role_of(&self, user_id: Uuid) -> Option<Role> {
        self.data().and_then(|o| o.members.get(&user_id).copied())
    }

    /// Whether `actor` may do this here: a superadmin may do anything; a member what their role
    /// allows ([`OrgError::Forbidden`] otherwise); to anyone else the organization does not
    /// exist ([`OrgError::NotFound`]).
    pub fn authorize(&self, actor: &Actor, permission: Permission) -> Result<(), OrgError> {
        if self.data().is_none() {
            return Err(OrgError::NotFound);
        }
        if actor.is_superadmin {
            return Ok(());
        }
        match self.role_of(actor.user_id) {
            None => Err(OrgError::NotFound),
            Some(role) if role.allows(permission) => Ok(()),
            Some(_) => Err(OrgError::Forbidden(permission)),
        }
    }
}

/// What can be asked of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgCommand {
    /// Create it, with its first owner.
    Create {
        /// Its id.
        org_id: Uuid,
        /// What it says of itself.
        profile: OrgProfile,
        /// Its first owner.
        owner: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Replace what it says of itself.
    Update {
        /// The new profile.
        profile: OrgProfile,
        /// When.
        at: DateTime<Utc>,
    },
    /// Stop it being used, or let it be used again.
    SetActive {
        /// Whether it is active.
        active: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it.
    Delete {
        /// When.
        at: DateTime<Utc>,
    },
    /// Add a member, or change a member's role.
    SetMember {
        /// The user.
        user_id: Uuid,
        /// Their role.
        role: Role,
        /// When.
        at: DateTime<Utc>,
    },
    /// Remove a member.
    RemoveMember {
        /// The user.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to organizations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrgEvent {
    /// An organization was created.
    OrganizationCreated {
        /// Its id.
        org_id: Uuid,
        /// What it says of itself.
        #[serde(flatten)]
        profile: OrgProfile,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// What it says of itself changed; the event carries it as it now is.
    OrganizationUpdated {
        /// Its id.
        org_id: Uuid,
        /// The profile.
        #[serde(flatten)]
        profile: OrgProfile,
        /// When.
        updated_at: DateTime<Utc>,
    },
    /// It was deactivated.
    OrganizationDeactivated {
        /// Its id.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was reactivated.
    OrganizationReactivated {
        /// Its id.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was deleted.
    OrganizationDeleted {
        /// Its id.
        org_id: Uuid,
        /// When.
        deleted_at: DateTime<Utc>,
    },
    /// A user joined it.
    MemberAdded {
        /// The organization.
        org_id: Uuid,
        /// The user.
        user_id: Uuid,
        /// Their role.
        role: Role,
        /// When.
        at: DateTime<Utc>,
    },
    /// A member's role changed.
    MemberRoleChanged {
        /// The organization.
        org_id: Uuid,
        /// The user.
        user_id: Uuid,
        /// The new role.
        role: Role,
        /// When.
        at: DateTime<Utc>,
    },
    /// A member left or was removed.
    MemberRemoved {
        /// The organization.
        org_id: Uuid,
        /// The user.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for OrgEvent {}

/// Why an organization command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// An organization with this id exists (or existed).
    #[error("the organization already exists")]
    AlreadyExists,
    /// No such organization.
    #[error("the organization does not exist")]
    NotFound,
    /// The user is not a member.
    #[error("the user is not a member of the organization")]
    NotAMember,
    /// The change would leave the organization without an owner.
    #[error("an organization keeps at least one owner: make another member owner first")]
    LastOwner,
    /// The user to add does not exist (the command layer checks before adding).
    #[error("no such user")]
    NoSuchUser,
    /// The actor's role does not allow it.
    #[error("your role in the organization does not allow this ({0:?} is needed)")]
    Forbidden(Permission),
}

impl Aggregate for Organization {
    type Command = OrgCommand;
    type Event = OrgEvent;
    type Error = OrgError;
    const CATEGORY: &'static str = "org";

    fn decide(&self, command: OrgCommand) -> Result<Vec<OrgEvent>, OrgError> {
        let org = match (self, &command) {
            (
                Organization::Absent,
                OrgCommand::Create {
                    org_id,
                    profile,
                    owner,
                    at,
                },
            ) => {
                return Ok(vec![
                    OrgEvent::OrganizationCreated {
                        org_id: *org_id,
                        profile: profile.clone(),
                        created_at: *at,
                    },
                    OrgEvent::MemberAdded {
                        org_id: *org_id,
                        user_id: *owner,
                        role: Role::Owner,
                        at: *at,
                    },
                ]);
            }
            (_, OrgCommand::Create { .. }) => return Err(OrgError::AlreadyExists),
            (Organization::Present(o), _) => o,
            _ => return Err(OrgError::NotFound),
        };
        let org_id = org.id;
        Ok(match command {
            OrgCommand::Create { .. } => unreachable!("handled above"),
            OrgCommand::Update { profile, at } => {
                if profile == org.profile {
                    vec![]
                } else {
                    vec![OrgEvent::OrganizationUpdated {
                        org_id,
                        profile,
                        updated_at: at,
                    }]
                }
            }
            OrgCommand::SetActive { active, .. } if active == org.is_active => vec![],
            OrgCommand::SetActive { active: true, at } => {
                vec![OrgEvent::OrganizationReactivated { org_id, at }]
            }
            OrgCommand::SetActive { active: false, at } => {
                vec![OrgEvent::OrganizationDeactivated { org_id, at }]
            }
            OrgCommand::Delete { at } => vec![OrgEvent::OrganizationDeleted {
                org_id,
                deleted_at: at,
            }],
            OrgCommand::SetMember { user_id, role, at } => match org.members.get(&user_id) {
                None => vec![OrgEvent::MemberAdded {
                    org_id,
                    user_id,
                    role,
                    at,
                }],
                Some(current) if *current == role => vec![],
                Some(current) => {
                    if *current == Role::Owner && org.owners() == 1 {
                        return Err(OrgError::LastOwner);
                    }
                    vec![OrgEvent::MemberRoleChanged {
                        org_id,
                        user_id,
                        role,
                        at,
                    }]
                }
            },
            OrgCommand::RemoveMember { user_id, at } => match org.members.get(&user_id) {
                None => return Err(OrgError::NotAMember),
                Some(Role::Owner) if org.owners() == 1 => return Err(OrgError::LastOwner),
                Some(_) => vec![OrgEvent::MemberRemoved {
                    org_id,
                    user_id,
                    at,
                }],
            },
        })
    }

    fn evolve(self, event: &OrgEvent) -> Self {
        match (self, event) {
            (
                _,
                OrgEvent::OrganizationCreated {
                    org_id,
                    profile,
                    created_at,
                },
            ) => Organization::Present(OrgData {
                id: *org_id,
                profile: profile.clone(),
                is_active: true,
                members: BTreeMap::new(),
                created_at: *created_at,
                updated_at: *created_at,
            }),
            (_, OrgEvent::OrganizationDeleted { .. }) => Organization::Deleted,
            (Organization::Present(mut o), e) => {
                match e {
                    OrgEvent::OrganizationUpdated {
                        profile,
                        updated_at,
                        ..
                    } => {
                        o.profile = profile.clone();
                        o.updated_at = *updated_at;
                    }
                    OrgEvent::OrganizationDeactivated { at, .. } => {
                        o.is_active = false;
                        o.updated_at = *at;
                    }
                    OrgEvent::OrganizationReactivated { at, .. } => {
                        o.is_active = true;
                        o.updated_at = *at;
                    }
                    OrgEvent::MemberAdded { user_id, role, .. }
                    | OrgEvent::MemberRoleChanged { user_id, role, .. } => {
                        o.members.insert(*user_id, *role);
                    }
                    OrgEvent::MemberRemoved { user_id, .. } => {
                        o.members.remove(user_id);
                    }
                    OrgEvent::OrganizationCreated { .. } | OrgEvent::OrganizationDeleted { .. } => {
                    }
                }
                Organization::Present(o)
            }
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
    fn alice() -> Uuid {
        Uuid::from_u128(10)
    }
    fn bob() -> Uuid {
        Uuid::from_u128(11)
    }
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn profile(name: &str) -> OrgProfile {
        OrgProfile {
            name: OrgName::parse(name).unwrap(),
            description: None,
            settings: JsonObject::default(),
            quotas: JsonObject::default(),
        }
    }
    fn created() -> [OrgEvent; 2] {
        [
            OrgEvent::OrganizationCreated {
                org_id: org(),
                profile: profile("Acme"),
                created_at: t(0),
            },
            OrgEvent::MemberAdded {
                org_id: org(),
                user_id: alice(),
                role: Role::Owner,
                at: t(0),
            },
        ]
    }

    #[test]
    fn an_organization_is_created_with_its_creator_as_owner() {
        given::<Organization>([])
            .when(OrgCommand::Create {
                org_id: org(),
                profile: profile("Acme"),
                owner: alice(),
                at: t(0),
            })
            .then(created());
    }

    #[test]
    fn an_organization_cannot_be_created_twice_even_after_deletion() {
        let create = OrgCommand::Create {
            org_id: org(),
            profile: profile("Acme"),
            owner: alice(),
            at: t(1),
        };
        given::<Organization>(created())
            .when(create.clone())
            .then_error(OrgError::AlreadyExists);
        let mut deleted = created().to_vec();
        deleted.push(OrgEvent::OrganizationDeleted {
            org_id: org(),
            deleted_at: t(1),
        });
        given::<Organization>(deleted)
            .when(create)
            .then_error(OrgError::AlreadyExists);
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        given::<Organization>(created())
            .when(OrgCommand::Update {
                profile: profile("Acme"),
                at: t(1),
            })
            .then([]);
        given::<Organization>(created())
            .when(OrgCommand::Update {
                profile: profile("Acme Corp"),
                at: t(1),
            })
            .then([OrgEvent::OrganizationUpdated {
                org_id: org(),
                profile: profile("Acme Corp"),
                updated_at: t(1),
            }]);
    }

    #[test]
    fn deactivation_and_reactivation_are_recorded_once() {
        let deactivated = OrgEvent::OrganizationDeactivated {
            org_id: org(),
            at: t(1),
        };
        given::<Organization>(created())
            .when(OrgCommand::SetActive {
                active: false,
                at: t(1),
            })
            .then([deactivated.clone()]);
        let mut history = created().to_vec();
        history.push(deactivated);
        given::<Organization>(history.clone())
            .when(OrgCommand::SetActive {
                active: false,
                at: t(2),
            })
            .then([]);
        given::<Organization>(history)
            .when(OrgCommand::SetActive {
                active: true,
                at: t(2),
            })
            .then([OrgEvent::OrganizationReactivated {
                org_id: org(),
                at: t(2),
            }]);
    }

    #[test]
    fn members_are_added_and_their_roles_changed() {
        let added = OrgEvent::MemberAdded {
            org_id: org(),
            user_id: bob(),
            role: Role::Viewer,
            at: t(1),
        };
        given::<Organization>(created())
            .when(OrgCommand::SetMember {
                user_id: bob(),
                role: Role::Viewer,
                at: t(1),
            })
            .then([added.clone()]);
        let mut history = created().to_vec();
        history.push(added);
        given::<Organization>(history.clone())
            .when(OrgCommand::SetMember {
                user_id: bob(),
                role: Role::Viewer,
                at: t(2),
            })
            .then([]);
        given::<Organization>(history)
            .when(OrgCommand::SetMember {
                user_id: bob(),
                role: Role::Admin,
                at: t(2),
            })
            .then([OrgEvent::MemberRoleChanged {
                org_id: org(),
                user_id: bob(),
                role: Role::Admin,
                at: t(2),
            }]);
    }

    #[test]
    fn the_last_owner_can_be_neither_removed_nor_demoted() {
        given::<Organization>(created())
            .when(OrgCommand::RemoveMember {
                user_id: alice(),
                at: t(1),
            })
            .then_error(OrgError::LastOwner);
        given::<Organization>(created())
            .when(OrgCommand::SetMember {
                user_id: alice(),
                role: Role::Admin,
                at: t(1),
            })
            .then_error(OrgError::LastOwner);
        // With a second owner, the first may go.
        let mut history = created().to_vec();
        history.push(OrgEvent::MemberAdded {
            org_id: org(),
            user_id: bob(),
            role: Role::Owner,
            at: t(1),
        });
        given::<Organization>(history)
            .when(OrgCommand::RemoveMember {
                user_id: alice(),
                at: t(2),
            })
            .then([OrgEvent::MemberRemoved {
                org_id: org(),
                user_id: alice(),
                at: t(2),
            }]);
    }

    #[test]
    fn removing_someone_who_is_not_a_member_is_refused() {
        given::<Organization>(created())
            .when(OrgCommand::RemoveMember {
                user_id: bob(),
                at: t(1),
            })
            .then_error(OrgError::NotAMember);
    }

    #[test]
    fn nothing_can_be_done_to_an_organization_that_does_not_exist_or_was_deleted() {
        let mut deleted = created().to_vec();
        deleted.push(OrgEvent::OrganizationDeleted {
            org_id: org(),
            deleted_at: t(1),
        });
        for history in [vec![], deleted] {
            given::<Organization>(history)
                .when(OrgCommand::SetMember {
                    user_id: bob(),
                    role: Role::Member,
                    at: t(2),
                })
                .then_error(OrgError::NotFound);
        }
    }

    #[test]
    fn the_state_follows_membership_and_activity() {
        let mut history = created().to_vec();
        history.push(OrgEvent::MemberAdded {
            org_id: org(),
            user_id: bob(),
            role: Role::Member,
            at: t(1),
        });
        history.push(OrgEvent::OrganizationDeactivated {
            org_id: org(),
            at: t(2),
        });
        let g = given::<Organization>(history);
        let state = g.state();
        assert_eq!(state.role_of(alice()), Some(Role::Owner));
        assert_eq!(state.role_of(bob()), Some(Role::Member));
        assert!(!state.data().unwrap().is_active);
    }

    #[test]
    fn members_may_do_what_their_role_allows_and_others_see_nothing() {
        let mut history = created().to_vec();
        history.push(OrgEvent::MemberAdded {
            org_id: org(),
            user_id: bob(),
            role: Role::Viewer,
            at: t(1),
        });
        let g = given::<Organization>(history);
        let state = g.state();
        let bob_acts = Actor {
            user_id: bob(),
            is_superadmin: false,
        };
        assert_eq!(state.authorize(&bob_acts, Permission::Read), Ok(()));
        assert_eq!(
            state.authorize(&bob_acts, Permission::Manage),
            Err(OrgError::Forbidden(Permission::Manage))
        );
        let stranger = Actor {
            user_id: Uuid::from_u128(99),
            is_superadmin: false,
        };
        assert_eq!(
            state.authorize(&stranger, Permission::Read),
            Err(OrgError::NotFound)
        );
        let root = Actor {
            is_superadmin: true,
            ..stranger
        };
        assert_eq!(state.authorize(&root, Permission::Own), Ok(()));
        assert_eq!(
            Organization::Deleted.authorize(&root, Permission::Read),
            Err(OrgError::NotFound)
        );
    }

    #[test]
    fn names_descriptions_and_objects_are_validated_as_windflow_does() {
        assert!(OrgName::parse("A").is_err());
        assert!(OrgName::parse("Ab").is_ok());
        assert!(OrgName::parse(&"x".repeat(101)).is_err());
        assert_eq!(
            OrgName::parse("  Acme   Corp ").unwrap().key(),
            OrgName::parse("acme corp").unwrap().key()
        );
        assert_eq!(
            OrgName::parse("  Acme   Corp ").unwrap().sort_key(),
            "acme corp"
        );
        assert!(OrgProfile::description(Some(&"d".repeat(501))).is_err());
        assert_eq!(OrgProfile::description(Some("  ")), Ok(None));
        assert!(JsonObject::parse("settings", &serde_json::json!([1])).is_err());
        assert!(JsonObject::parse("quotas", &serde_json::json!({"max_projects": 10})).is_ok());
        assert_eq!(
            JsonObject::parse("quotas", &serde_json::Value::Null),
            Ok(JsonObject::default())
        );
    }

    #[test]
    fn events_keep_their_stored_shape() {
        let (ty, data) = created()[0].encode();
        assert_eq!(ty, "OrganizationCreated");
        assert_eq!(data["name"], "Acme");
        assert_eq!(data["org_id"], serde_json::json!(org()));
        for e in created() {
            let (ty, data) = e.encode();
            assert_eq!(OrgEvent::decode(&ty, &data).unwrap(), e);
        }
    }
}

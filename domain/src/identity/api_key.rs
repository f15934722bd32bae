//! An API key: a named credential of one organization with scopes and an optional expiry.
//! The key itself is shown once when created; only its hash is kept, in the credentials table,
//! with its last use (a use is not an event: it would flood the log).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Permission;
use crate::value::{InvalidValue, invalid, text};
use crate::{Aggregate, DomainEvent};

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read.
    Read,
    /// Create and change.
    Write,
    /// Deploy (the deployment contexts).
    Deploy,
    /// Manage members and keys.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Deploy, Scope::Admin];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    /// Reads scopes from input: at least one, each known.
    pub fn parse_all<'a>(
        raw: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<Scope>, InvalidValue> {
        let mut scopes = BTreeSet::new();
        for s in raw {
            let scope = Scope::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| {
                    invalid(
                        "scopes",
                        format!("unknown scope {s:?}: use read, write, deploy or admin"),
                    )
                })?;
            scopes.insert(scope);
        }
        if scopes.is_empty() {
            return Err(invalid("scopes", "must name at least one scope"));
        }
        Ok(scopes)
    }

    /// Whether a key with these scopes has the permission (`admin` covers everything, `write`
    /// covers reading).
    pub fn allow(scopes: &BTreeSet<Scope>, permission: Permission) -> bool {
        let has = |s| scopes.contains(&s) || scopes.contains(&Scope::Admin);
        match permission {
            Permission::Read => has(Scope::Read) || has(Scope::Write),
            Permission::Write => has(Scope::Write),
            Permission::Manage => has(Scope::Admin),
            // Deleting an organization takes a person, never a key.
            Permission::Own => false,
        }
    }
}

/// A key that exists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: Uuid,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyData {
    /// Whether it works at this moment.
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The API key aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApiKey {
    /// Never created.
    #[default]
    Absent,
    /// Created (perhaps revoked).
    Present(KeyData),
}

/// What can be asked of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCommand {
    /// Create it (its secret's hash is stored beside, by the caller).
    Create {
        /// Its id.
        key_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name (1 to 100 characters).
        name: String,
        /// What it may do.
        scopes: BTreeSet<Scope>,
        /// When it stops working.
        expires_at: Option<DateTime<Utc>>,
        /// Who creates it.
        created_by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Revoke it, now and for good.
    Revoke {
        /// The organization acting (another's key is not found).
        org_id: Uuid,
        /// Who.
        by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum KeyEvent {
    /// A key was created.
    ApiKeyCreated {
        /// Its id.
        key_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// Its name.
        name: String,
        /// What it may do.
        scopes: BTreeSet<Scope>,
        /// When it stops working.
        #[serde(default)]
        expires_at: Option<DateTime<Utc>>,
        /// Who created it.
        created_by: Uuid,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// It was revoked.
    ApiKeyRevoked {
        /// Its id.
        key_id: Uuid,
        /// Who.
        revoked_by: Uuid,
        /// When.
        revoked_at: DateTime<Utc>,
    },
}

impl DomainEvent for KeyEvent {}

/// Why a key command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key with this id exists.
    #[error("the API key already exists")]
    AlreadyExists,
    /// No such key in this organization.
    #[error("the API key does not exist")]
    NotFound,
    /// Its expiry is not after its creation.
    #[error("expires_at must be in the future")]
    ExpiresInThePast,
    /// Its name is empty or too long.
    #[error("{0}")]
    InvalidName(InvalidValue),
}

impl Aggregate for ApiKey {
    type Command = KeyCommand;
    type Event = KeyEvent;
    type Error = KeyError;
    const CATEGORY: &'static str = "apikey";

    fn decide(&self, command: KeyCommand) -> Result<Vec<KeyEvent>, KeyError> {
        match (self, command) {
            (
                ApiKey::Absent,
                KeyCommand::Create {
                    key_id,
                    org_id,
                    name,
                    scopes,
                    expires_at,
                    created_by,
                    at,
                },
            ) => {
                let name = text("name", &name, 1, MAX_NAME_CHARS).map_err(KeyError::InvalidName)?;
                if expires_at.is_some_and(|e| e <= at) {
                    return Err(KeyError::ExpiresInThePast);
                }
                Ok(vec![KeyEvent::ApiKeyCreated {
                    key_id,
                    org_id,
                    name,
                    scopes,
                    expires_at,
                    created_by,
                    created_at: at,
                }])
            }
            (ApiKey::Present(_), KeyCommand::Create { .. }) => Err(KeyError::AlreadyExists),
            (ApiKey::Present(k), KeyCommand::Revoke { org_id, by, at }) if k.org_id == org_id => {
                if k.revoked_at.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![KeyEvent::ApiKeyRevoked {
                    key_id: k.id,
                    revoked_by: by,
                    revoked_at: at,
                }])
            }
            (_, KeyCommand::Revoke { .. }) => Err(KeyError::NotFound),
        }
    }

    fn evolve(self, event: &KeyEvent) -> Self {
        match (self, event) {
            (
                _,
                KeyEvent::ApiKeyCreated {
                    key_id,
                    org_id,
                    name,
                    scopes,
                    expires_at,
                    created_by,
                    ..
                },
            ) => ApiKey::Present(KeyData {
                id: *key_id,
                org_id: *org_id,
                name: name.clone(),
                scopes: scopes.clone(),
                expires_at: *expires_at,
                created_by: *created_by,
                revoked_at: None,
            }),
            (ApiKey::Present(mut k), KeyEvent::ApiKeyRevoked { revoked_at, .. }) => {
                k.revoked_at = Some(*revoked_at);
                ApiKey::Present(k)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn org() -> Uuid {
        Uuid::from_u128(1)
    }
    fn key() -> Uuid {
        Uuid::from_u128(30)
    }
    fn admin() -> Uuid {
        Uuid::from_u128(10)
    }
    fn scopes(s: &[&str]) -> BTreeSet<Scope> {
        Scope::parse_all(s.iter().copied()).unwrap()
    }
    fn create(expires_at: Option<DateTime<Utc>>) -> KeyCommand {
        KeyCommand::Create {
            key_id: key(),
            org_id: org(),
            name: " ci ".into(),
            scopes: scopes(&["read", "deploy"]),
            expires_at,
            created_by: admin(),
            at: t(0),
        }
    }
    fn created() -> KeyEvent {
        KeyEvent::ApiKeyCreated {
            key_id: key(),
            org_id: org(),
            name: "ci".into(),
            scopes: scopes(&["read", "deploy"]),
            expires_at: Some(t(100)),
            created_by: admin(),
            created_at: t(0),
        }
    }

    #[test]
    fn a_key_is_created_with_its_scopes_and_expiry() {
        given::<ApiKey>([])
            .when(create(Some(t(100))))
            .then([created()]);
        given::<ApiKey>([])
            .when(create(Some(t(0))))
            .then_error(KeyError::ExpiresInThePast);
    }

    #[test]
    fn a_key_is_revoked_once_and_only_by_its_organization() {
        let revoke = |org_id| KeyCommand::Revoke {
            org_id,
            by: admin(),
            at: t(5),
        };
        let revoked = KeyEvent::ApiKeyRevoked {
            key_id: key(),
            revoked_by: admin(),
            revoked_at: t(5),
        };
        given::<ApiKey>([created()])
            .when(revoke(org()))
            .then([revoked.clone()]);
        given::<ApiKey>([created(), revoked])
            .when(revoke(org()))
            .then([]);
        given::<ApiKey>([created()])
            .when(revoke(Uuid::from_u128(2)))
            .then_error(KeyError::NotFound);
    }

    #[test]
    fn a_key_works_until_it_expires_or_is_revoked() {
        let g = given::<ApiKey>([created()]);
        let ApiKey::Present(k) = g.state() else {
            panic!("absent")
        };
        assert!(k.usable_at(t(99)));
        assert!(!k.usable_at(t(100)));
    }

    #[test]
    fn scopes_grant_permissions_and_no_key_owns_an_organization() {
        let read = scopes(&["read"]);
        assert!(Scope::allow(&read, Permission::Read));
        assert!(!Scope::allow(&read, Permission::Write));
        let write = scopes(&["write"]);
        assert!(Scope::allow(&write, Permission::Read));
        let admin = scopes(&["admin"]);
        assert!(Scope::allow(&admin, Permission::Manage));
        assert!(!Scope::allow(&admin, Permission::Own));
        assert!(Scope::parse_all(["root"]).is_err());
        assert!(Scope::parse_all([]).is_err());
    }
}

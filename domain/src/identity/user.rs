//! A user: a person who logs in. Their password hash is not here (it lives in the credentials
//! table); the user's stream records only that it changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, invalid, name_key, nfkc, text, unique_name, visible};
use crate::{Aggregate, DomainEvent};

/// Shortest and longest username, in characters (WindFlow's `LoginRequest`).
pub const USERNAME_CHARS: (usize, usize) = (3, 50);
/// Shortest password, in characters (WindFlow's `LoginRequest`).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in bytes (argon2 takes anything; this bounds the work per login).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest email address, in bytes (RFC 5321).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest full name, in characters.
pub const MAX_FULL_NAME_CHARS: usize = 200;

/// A username: 3 to 50 of `A-Z a-z 0-9 _ . -` once NFKC-normalized (full-width letters are
/// their ASCII selves), unique on the platform by [`Username::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Parses a username from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let name = unique_name("username", raw, USERNAME_CHARS.0, USERNAME_CHARS.1)?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(invalid(
                "username",
                "may contain only letters, digits, `_`, `.` and `-`",
            ));
        }
        Ok(Self(name))
    }

    /// The username as given (NFKC-normalized).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that makes usernames unique: case and look-alikes (`1` and `l`, `rn` and `m`)
    /// do not count ([`name_key`]).
    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// An email address: one `@` with text on both sides and a dot in the domain, no spaces, no
/// invisible or bidirectional control characters. The local part is kept as given, the domain
/// NFKC-normalized and lowercased (as IDNA does before its ASCII form); unique on the platform
/// by [`Email::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Parses an email address from input.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let email = raw.trim();
        if email.is_empty() {
            return Err(invalid("email", "must not be empty"));
        }
        if email.len() > MAX_EMAIL_LEN {
            return Err(invalid(
                "email",
                format!("must be at most {MAX_EMAIL_LEN} bytes"),
            ));
        }
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid {
            return Err(invalid("email", "is not an email address"));
        }
        visible("email", email)?;
        let (local, domain) = email.split_once('@').expect("checked above");
        let email = format!("{local}@{}", nfkc(domain).to_lowercase());
        if email.len() > MAX_EMAIL_LEN {
            return Err(invalid(
                "email",
                format!("must be at most {MAX_EMAIL_LEN} bytes"),
            ));
        }
        Ok(Self(email))
    }

    /// The address as given (its domain normalized).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that makes addresses unique: NFKC-normalized and lowercased whole. Addresses are
    /// not reduced to confusable skeletons: two look-alike addresses are two mailboxes.
    pub fn key(&self) -> String {
        nfkc(&self.0).to_lowercase()
    }
}

/// Checks a new password against the rules (at least 8 characters, at most 1024 bytes). The
/// password itself is never stored in the domain.
pub fn check_password(field: &'static str, password: &str) -> Result<(), InvalidValue> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// What a user says of themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Their email address.
    pub email: Email,
    /// Their full name.
    #[serde(default)]
    pub full_name: Option<String>,
}

impl UserProfile {
    /// Parses a full name (trimmed, at most 200 characters; empty is none).
    pub fn full_name(raw: Option<&str>) -> Result<Option<String>, InvalidValue> {
        match raw {
            None => Ok(None),
            Some(n) => {
                let n = text("full_name", n, 0, MAX_FULL_NAME_CHARS)?;
                Ok((!n.is_empty()).then_some(n))
            }
        }
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserData {
    /// Their id.
    pub id: Uuid,
    /// Their username (fixed).
    pub username: Username,
    /// What they say of themselves.
    pub profile: UserProfile,
    /// Whether they administer the whole platform.
    pub is_superadmin: bool,
    /// Whether they may log in.
    pub is_active: bool,
    /// How many times their password changed (sessions older than a change end).
    pub password_changes: u32,
    /// When they registered.
    pub created_at: DateTime<Utc>,
}

/// The user aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum User {
    /// Never registered.
    #[default]
    Absent,
    /// Registered.
    Present(UserData),
}

impl User {
    /// The user, if registered.
    pub fn data(&self) -> Option<&UserData> {
        match self {
            User::Present(u) => Some(u),
            User::Absent => None,
        }
    }
}

/// What can be asked of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Register them (their password hash is stored beside, by the caller).
    Register {
        /// Their id.
        user_id: Uuid,
        /// Their username (unique: checked by a reservation).
        username: Username,
        /// What they say of themselves.
        profile: UserProfile,
        /// Whether they administer the platform.
        is_superadmin: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Replace what they say of themselves.
    Update {
        /// The new profile.
        profile: UserProfile,
        /// When.
        at: DateTime<Utc>,
    },
    /// Let them log in, or not.
    SetActive {
        /// Whether they may.
        active: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Grant or withdraw platform administration.
    SetSuperadmin {
        /// Whether they are a superadmin.
        superadmin: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record that their password changed.
    ChangePassword {
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    /// A user registered.
    UserRegistered {
        /// Their id.
        user_id: Uuid,
        /// Their username.
        username: Username,
        /// What they say of themselves.
        #[serde(flatten)]
        profile: UserProfile,
        /// Whether they administer the platform.
        is_superadmin: bool,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// Their profile changed; the event carries it as it now is.
    UserUpdated {
        /// Their id.
        user_id: Uuid,
        /// The profile.
        #[serde(flatten)]
        profile: UserProfile,
        /// When.
        updated_at: DateTime<Utc>,
    },
    /// They may no longer log in; their sessions and keys stop working.
    UserDeactivated {
        /// Their id.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// They may log in again.
    UserReactivated {
        /// Their id.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Platform administration granted or withdrawn.
    SuperadminChanged {
        /// Their id.
        user_id: Uuid,
        /// Whether they are a superadmin now.
        is_superadmin: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Their password changed (the fact only: no hash).
    PasswordChanged {
        /// Their id.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {}

/// Why a user command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user with this id exists.
    #[error("the user already exists")]
    AlreadyExists,
    /// No such user.
    #[error("the user does not exist")]
    NotFound,
}

impl Aggregate for User {
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    const CATEGORY: &'static str = "user";

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let user = match (self, command) {
            (
                User::Absent,
                UserCommand::Register {
                    user_id,
                    username,
                    profile,
                    is_superadmin,
                    at,
                },
            ) => {
                return Ok(vec![UserEvent::UserRegistered {
                    user_id,
                    username,
                    profile,
                    is_superadmin,
                    created_at: at,
                }]);
            }
            (User::Present(_), UserCommand::Register { .. }) => {
                return Err(UserError::AlreadyExists);
            }
            (User::Absent, _) => return Err(UserError::NotFound),
            (User::Present(u), command) => (u, command),
        };
        let (u, command) = user;
        let user_id = u.id;
        Ok(match command {
            UserCommand::Register { .. } => unreachable!("handled above"),
            UserCommand::Update { profile, .. } if profile == u.profile => vec![],
            UserCommand::Update { profile, at } => vec![UserEvent::UserUpdated {
                user_id,
                profile,
                updated_at: at,
            }],
            UserCommand::SetActive { active, .. } if active == u.is_active => vec![],
            UserCommand::SetActive { active: true, at } => {
                vec![UserEvent::UserReactivated { user_id, at }]
            }
            UserCommand::SetActive { active: false, at } => {
                vec![UserEvent::UserDeactivated { user_id, at }]
            }
            UserCommand::SetSuperadmin { superadmin, .. } if superadmin == u.is_superadmin => {
                vec![]
            }
            UserCommand::SetSuperadmin { superadmin, at } => vec![UserEvent::SuperadminChanged {
                user_id,
                is_superadmin: superadmin,
                at,
            }],
            UserCommand::ChangePassword { at } => vec![UserEvent::PasswordChanged { user_id, at }],
        })
    }

    fn evolve(self, event: &UserEvent) -> Self {
        match (self, event) {
            (
                _,
                UserEvent::UserRegistered {
                    user_id,
                    username,
                    profile,
                    is_superadmin,
                    created_at,
                },
            ) => User::Present(UserData {
                id: *user_id,
                username: username.clone(),
                profile: profile.clone(),
                is_superadmin: *is_superadmin,
                is_active: true,
                password_changes: 0,
                created_at: *created_at,
            }),
            (User::Present(mut u), e) => {
                match e {
                    UserEvent::UserUpdated { profile, .. } => u.profile = profile.clone(),
                    UserEvent::UserDeactivated { .. } => u.is_active = false,
                    UserEvent::UserReactivated { .. } => u.is_active = true,
                    UserEvent::SuperadminChanged { is_superadmin, .. } => {
                        u.is_superadmin = *is_superadmin;
                    }
                    UserEvent::PasswordChanged { .. } => u.password_changes += 1,
                    UserEvent::UserRegistered { .. } => {}
                }
                User::Present(u)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn id() -> Uuid {
        Uuid::from_u128(10)
    }
    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn profile(email: &str) -> UserProfile {
        UserProfile {
            email: Email::parse(email).unwrap(),
            full_name: None,
        }
    }
    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            user_id: id(),
            username: Username::parse("alice").unwrap(),
            profile: profile("alice@example.com"),
            is_superadmin: false,
            created_at: t(0),
        }
    }

    #[test]
    fn a_user_registers_once() {
        let register = UserCommand::Register {
            user_id: id(),
            username: Username::parse("alice").unwrap(),
            profile: profile("alice@example.com"),
            is_superadmin: false,
            at: t(0),
        };
        given::<User>([])
            .when(register.clone())
            .then([registered()]);
        given::<User>([registered()])
            .when(register)
            .then_error(UserError::AlreadyExists);
    }

    #[test]
    fn a_password_change_is_recorded_as_a_fact_without_any_secret() {
        given::<User>([registered()])
            .when(UserCommand::ChangePassword { at: t(1) })
            .then([UserEvent::PasswordChanged {
                user_id: id(),
                at: t(1),
            }]);
        let (_, data) = UserEvent::PasswordChanged {
            user_id: id(),
            at: t(1),
        }
        .encode();
        assert_eq!(data.as_object().unwrap().len(), 2, "{data}");
    }

    #[test]
    fn deactivation_superadmin_and_updates_record_only_changes() {
        given::<User>([registered()])
            .when(UserCommand::SetActive {
                active: true,
                at: t(1),
            })
            .then([]);
        given::<User>([registered()])
            .when(UserCommand::SetActive {
                active: false,
                at: t(1),
            })
            .then([UserEvent::UserDeactivated {
                user_id: id(),
                at: t(1),
            }]);
        given::<User>([registered()])
            .when(UserCommand::SetSuperadmin {
                superadmin: true,
                at: t(1),
            })
            .then([UserEvent::SuperadminChanged {
                user_id: id(),
                is_superadmin: true,
                at: t(1),
            }]);
        given::<User>([registered()])
            .when(UserCommand::Update {
                profile: profile("alice@example.com"),
                at: t(1),
            })
            .then([]);
    }

    #[test]
    fn nothing_can_be_done_to_a_user_who_never_registered() {
        given::<User>([])
            .when(UserCommand::ChangePassword { at: t(1) })
            .then_error(UserError::NotFound);
    }

    #[test]
    fn look_alike_usernames_and_addresses_are_refused_or_share_a_key() {
        assert_eq!(Username::parse("ａｌｉｃｅ").unwrap().as_str(), "alice");
        assert_eq!(
            Username::parse("ａｌｉｃｅ").unwrap().key(),
            Username::parse("Alice").unwrap().key()
        );
        assert_eq!(
            Username::parse("a1ice").unwrap().key(),
            Username::parse("alice").unwrap().key()
        );
        assert_eq!(
            Username::parse("ali\u{200b}ce").unwrap_err().field,
            "username"
        );
        // Cyrillic `а` (U+0430) is not among a username's characters.
        assert!(Username::parse("\u{430}lice").is_err());
        let email = Email::parse("Alice@ＥＸＡＭＰＬＥ.com").unwrap();
        assert_eq!(email.as_str(), "Alice@example.com");
        assert_eq!(
            Email::parse("ａｌｉｃｅ@example.com").unwrap().key(),
            email.key()
        );
        assert_eq!(
            Email::parse("alice\u{202e}@example.com").unwrap_err().field,
            "email"
        );
    }

    #[test]
    fn usernames_emails_and_passwords_follow_windflows_rules() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse(&"a".repeat(51)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert_eq!(
            Username::parse("Alice.B-1").unwrap().key(),
            Username::parse("alice.b-1").unwrap().key()
        );
        for bad in [
            "",
            "alice",
            "a@b",
            "@example.com",
            "a@@example.com",
            "a b@example.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Email::parse(" Alice@Example.com ").unwrap().key(),
            "alice@example.com"
        );
        assert!(check_password("password", "short").is_err());
        assert!(check_password("password", "long enough").is_ok());
        assert!(check_password("password", &"p".repeat(1025)).is_err());
    }
}

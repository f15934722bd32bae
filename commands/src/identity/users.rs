//! Users: registered by a superadmin, or by an admin of the organization they join. A user is a
//! `UserRegistered` event (no secret), a `MemberAdded` in their organization, and a login in the
//! credentials table (the password's argon2id hash). Usernames and email addresses are unique on
//! the platform, whatever their case, through reservations.

use std::sync::Arc;

use atelier_domain::identity::organization::{OrgCommand, OrgError, Organization};
use atelier_domain::identity::user::{Email, User, UserCommand, UserError, UserProfile, Username};
use atelier_domain::identity::{Actor, Permission, Role};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use super::credentials::{CredentialError, CredentialStore};
use super::secrets::{random_hex, sha256};
use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{PLATFORM, claim, release_quietly, reservation_stream, settle_key_change};

/// The reservation of a username (by its key, [`Username::key`]).
pub fn username_reservation(key: &str) -> StreamName {
    reservation_stream("username", PLATFORM, key)
}

/// The reservation of an email address (by its key).
pub fn email_reservation(key: &str) -> StreamName {
    reservation_stream("email", PLATFORM, key)
}

/// A new user.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Their username.
    pub username: Username,
    /// Their email and name.
    pub profile: UserProfile,
    /// Their password (checked against the rules by the caller; hashed, never kept); `None`
    /// invites them: they set it with the invitation's token.
    pub password: Option<String>,
    /// Whether they administer the platform (only a superadmin may grant it).
    pub is_superadmin: bool,
    /// The organization they join, if any (only a superadmin creates a user in none: they
    /// belong to the organizations they are added to later).
    pub org_id: Option<Uuid>,
    /// Their role there.
    pub role: Role,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("is_superadmin", &self.is_superadmin)
            .field("org_id", &self.org_id)
            .field("role", &self.role)
            .finish()
    }
}

/// Why a user could not be created, changed or given a password.
#[derive(Debug, thiserror::Error)]
pub enum UserServiceError {
    /// The organization refused (not found, or the actor's role does not allow it).
    #[error(transparent)]
    Organization(#[from] CommandError<OrgError>),
    /// The user's own rules refused.
    #[error(transparent)]
    User(#[from] CommandError<UserError>),
    /// Only a superadmin may create a superadmin.
    #[error("only a superadmin may create a superadmin")]
    SuperadminOnly,
    /// Storing the login failed.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The actor may not make this change.
    #[error("{0}")]
    NotAllowed(&'static str),
    /// A default organization the user does not belong to.
    #[error("the user does not belong to that organization")]
    NotAMember,
}

/// How long an invitation can be accepted.
pub const INVITATION_TTL_DAYS: i64 = 7;

/// An invitation's token, shown once to whoever invited the user.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The token to accept it with.
    pub token: String,
    /// Until when.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A user just created.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    /// What was written.
    pub written: Written<User>,
    /// Their invitation, when they were invited rather than given a password.
    pub invitation: Option<Invitation>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    /// A new email address (unique on the platform).
    pub email: Option<Email>,
    /// A new name (`Some(None)` clears it).
    pub full_name: Option<Option<String>>,
    /// Let them log in, or not (superadmins only, never on themselves).
    pub is_active: Option<bool>,
    /// Grant or withdraw platform administration (superadmins only, never on themselves).
    pub is_superadmin: Option<bool>,
    /// The organization their logins act in unless they name one: one they belong to (kept
    /// with their login, beside the log, like the password).
    pub default_org: Option<Uuid>,
}

/// Registers users.
#[derive(Clone)]
pub struct UserService {
    store: Arc<dyn EventStore>,
    identity: CredentialStore,
}

impl UserService {
    /// A service writing events to `store` and logins through `identity`.
    pub fn new(store: Arc<dyn EventStore>, identity: CredentialStore) -> Self {
        Self { store, identity }
    }

    /// The user's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<User>(id)
    }

    /// Reserves a username or email address on the platform; a holder that never registered
    /// (a crash between reservation and registration) gives it up.
    async fn reserve_key(
        &self,
        ctx: &CommandContext,
        stream: StreamName,
        owner: Uuid,
        what: &str,
    ) -> Result<StreamName, UserServiceError> {
        claim(
            self.store.as_ref(),
            stream,
            owner,
            ctx,
            |u: &User| u.data().is_some(),
            || format!("{what} is taken"),
        )
        .await
        .map_err(UserServiceError::User)
    }

    /// Changes a user's own password: `Ok(false)` when `current` is wrong. Records the fact
    /// (`PasswordChanged`, no secret) after the new hash is stored.
    #[tracing::instrument(name = "users.change_password", skip_all)]
    pub async fn change_password(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        current: &str,
        new: &str,
    ) -> Result<bool, UserServiceError> {
        if !self.identity.change_password(user_id, current, new).await? {
            return Ok(false);
        }
        execute::<User>(
            self.store.as_ref(),
            &Self::stream(user_id),
            ctx,
            None,
            UserCommand::ChangePassword {
                at: ctx.occurred_at,
            },
        )
        .await?;
        Ok(true)
    }

    /// Changes a user: their own profile (email, name) a user may change, a superadmin anyone's;
    /// whether they may log in and whether they are a superadmin only a superadmin, and never
    /// their own. Another user's account is not found for anyone else.
    #[tracing::instrument(name = "users.update", skip_all, fields(%user_id))]
    pub async fn update(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        user_id: Uuid,
        changes: UserChanges,
    ) -> Result<Written<User>, UserServiceError> {
        let is_self = actor.user_id == user_id;
        if !is_self && !actor.is_superadmin {
            return Err(UserServiceError::User(CommandError::Rejected(
                UserError::NotFound,
            )));
        }
        if changes.is_active.is_some() || changes.is_superadmin.is_some() {
            if !actor.is_superadmin {
                return Err(UserServiceError::NotAllowed(
                    "only a superadmin may activate, deactivate, or make superadmins",
                ));
            }
            if is_self {
                return Err(UserServiceError::NotAllowed(
                    "a superadmin cannot deactivate themselves or withdraw their own rights",
                ));
            }
        }
        let stream = Self::stream(user_id);
        let (current, _) = load::<User>(self.store.as_ref(), &stream).await?;
        let Some(user) = current.data() else {
            return Err(UserServiceError::User(CommandError::Rejected(
                UserError::NotFound,
            )));
        };
        if let Some(org_id) = changes.default_org {
            let (org, _) =
                load::<Organization>(self.store.as_ref(), &stream_of::<Organization>(org_id))
                    .await?;
            if org.role_of(user_id).is_none() {
                return Err(UserServiceError::NotAMember);
            }
        }
        let mut profile = user.profile.clone();
        let old_email = profile.email.clone();
        if let Some(email) = changes.email {
            profile.email = email;
        }
        if let Some(full_name) = changes.full_name {
            profile.full_name = full_name;
        }
        let new_email = (profile.email.key() != old_email.key()).then(|| profile.email.clone());
        let reserved = match &new_email {
            Some(email) => Some(
                self.reserve_key(
                    ctx,
                    email_reservation(&email.key()),
                    user_id,
                    &format!("the email address {:?}", email.as_str()),
                )
                .await?,
            ),
            None => None,
        };
        let updated = execute::<User>(
            self.store.as_ref(),
            &stream,
            ctx,
            None,
            UserCommand::Update {
                profile,
                at: ctx.occurred_at,
            },
        )
        .await;
        // The login follows the recorded address before the old one is given up.
        let login_email = match (&updated, &new_email) {
            (Ok(_), Some(email)) => self.identity.set_email(user_id, email.as_str()).await,
            _ => Ok(()),
        };
        settle_key_change(self.store.as_ref(), user_id, &updated, reserved, |_| {
            new_email
                .as_ref()
                .map(|_| email_reservation(&old_email.key()))
        })
        .await;
        login_email?;
        let mut written = updated?;
        for command in [
            changes.is_active.map(|active| UserCommand::SetActive {
                active,
                at: ctx.occurred_at,
            }),
            changes
                .is_superadmin
                .map(|superadmin| UserCommand::SetSuperadmin {
                    superadmin,
                    at: ctx.occurred_at,
                }),
        ]
        .into_iter()
        .flatten()
        {
            let next = execute::<User>(self.store.as_ref(), &stream, ctx, None, command).await?;
            // Keep the state before the first change; take the rest from the last one.
            if next.position.is_some() {
                written = Written {
                    previous: written.previous,
                    ..next
                };
            }
        }
        if let Some(org_id) = changes.default_org {
            self.identity.set_default_org(user_id, Some(org_id)).await?;
        }
        Ok(written)
    }

    /// A user was added to an organization: it becomes the one their logins act in if they had
    /// none (their first), so a user of one organization acts in it from their next login
    /// without waiting for any read model. A default they have is kept.
    pub async fn joined(&self, user_id: Uuid, org_id: Uuid) -> Result<(), UserServiceError> {
        Ok(self.identity.adopt_default_org(user_id, org_id).await?)
    }

    /// Registers a user in an organization. `actor` must be a superadmin or may manage the
    /// organization's members; only a superadmin may create a superadmin.
    #[tracing::instrument(name = "users.create", skip_all)]
    pub async fn create(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        new: NewUser,
    ) -> Result<CreatedUser, UserServiceError> {
        if new.is_superadmin && !actor.is_superadmin {
            return Err(UserServiceError::SuperadminOnly);
        }
        match new.org_id {
            Some(org_id) => {
                let (org, _) =
                    load::<Organization>(self.store.as_ref(), &stream_of::<Organization>(org_id))
                        .await?;
                org.authorize(actor, Permission::Manage)
                    .map_err(|e| UserServiceError::Organization(CommandError::Rejected(e)))?;
            }
            None if actor.is_superadmin => {}
            None => {
                return Err(UserServiceError::NotAllowed(
                    "only a superadmin may create a user outside every organization",
                ));
            }
        }

        let id = Uuid::now_v7();
        let name = self
            .reserve_key(
                ctx,
                username_reservation(&new.username.key()),
                id,
                &format!("the username {:?}", new.username.as_str()),
            )
            .await?;
        let email = match self
            .reserve_key(
                ctx,
                email_reservation(&new.profile.email.key()),
                id,
                &format!("the email address {:?}", new.profile.email.as_str()),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                release_quietly(self.store.as_ref(), &name, id).await;
                return Err(e);
            }
        };
        let email_address = new.profile.email.as_str().to_owned();
        let registered = execute::<User>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            UserCommand::Register {
                user_id: id,
                username: new.username.clone(),
                profile: new.profile,
                is_superadmin: new.is_superadmin,
                at: ctx.occurred_at,
            },
        )
        .await;
        let registered = match registered {
            Ok(w) => w,
            Err(e) => {
                release_quietly(self.store.as_ref(), &name, id).await;
                release_quietly(self.store.as_ref(), &email, id).await;
                return Err(e.into());
            }
        };
        if let Some(org_id) = new.org_id {
            let mut org_ctx = ctx.clone();
            org_ctx.org_id = org_id;
            execute::<Organization>(
                self.store.as_ref(),
                &stream_of::<Organization>(org_id),
                &org_ctx,
                None,
                OrgCommand::SetMember {
                    user_id: id,
                    role: new.role,
                    at: ctx.occurred_at,
                },
            )
            .await?;
        }
        // Last: the login, or the invitation to set one. A failure here leaves a user who
        // cannot log in yet (an operator sets a password), never a login without a user.
        let invitation = match &new.password {
            Some(password) => {
                self.identity
                    .add_credentials(
                        id,
                        new.username.as_str(),
                        &email_address,
                        password,
                        new.org_id,
                        new.is_superadmin,
                    )
                    .await?;
                None
            }
            None => {
                let token = random_hex(32);
                let expires_at = ctx.occurred_at + chrono::Duration::days(INVITATION_TTL_DAYS);
                self.identity
                    .store_invitation(id, new.org_id, &sha256(&token), expires_at)
                    .await?;
                Some(Invitation { token, expires_at })
            }
        };
        Ok(CreatedUser {
            written: registered,
            invitation,
        })
    }

    /// Accepts an invitation: the invited user's password is set and they can log in. `None`
    /// when the token is unknown, used or expired.
    #[tracing::instrument(name = "users.accept_invitation", skip_all)]
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
    ) -> Result<Option<Written<User>>, UserServiceError> {
        let Some((user_id, org_id)) = self.identity.take_invitation(&sha256(token)).await? else {
            return Ok(None);
        };
        let (user, _) = load::<User>(self.store.as_ref(), &Self::stream(user_id)).await?;
        let Some(u) = user.data() else {
            return Ok(None);
        };
        self.identity
            .add_credentials(
                user_id,
                u.username.as_str(),
                u.profile.email.as_str(),
                password,
                org_id,
                u.is_superadmin,
            )
            .await?;
        let ctx = CommandContext::new(org_id.unwrap_or_default(), user_id.to_string());
        let written = execute::<User>(
            self.store.as_ref(),
            &Self::stream(user_id),
            &ctx,
            None,
            UserCommand::ChangePassword {
                at: ctx.occurred_at,
            },
        )
        .await?;
        Ok(Some(written))
    }
}

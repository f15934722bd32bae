//! Users: registered by a superadmin, or by an admin of the organization they join. A user is a
//! `UserRegistered` event (no secret), a `MemberAdded` in their organization, and a login in the
//! credentials table (the password's argon2id hash). Usernames and email addresses are unique on
//! the platform, whatever their case, through reservations.

use std::sync::Arc;

use atelier_domain::identity::organization::{OrgCommand, OrgError, Organization};
use atelier_domain::identity::user::{User, UserCommand, UserError, UserProfile, Username};
use atelier_domain::identity::{Actor, Permission, Role};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::identity::{Identity, IdentityError};
use crate::reservation::{PLATFORM, Reservation, release_quietly, reservation_stream, reserve};

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
    /// Their password (checked against the rules by the caller; hashed, never kept).
    pub password: String,
    /// Whether they administer the platform (only a superadmin may grant it).
    pub is_superadmin: bool,
    /// The organization they join, and as what.
    pub org_id: Uuid,
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

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum UserCreateError {
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
    Credentials(#[from] IdentityError),
}

/// Registers users.
#[derive(Clone)]
pub struct UserService {
    store: Arc<dyn EventStore>,
    identity: Identity,
}

impl UserService {
    /// A service writing events to `store` and logins through `identity`.
    pub fn new(store: Arc<dyn EventStore>, identity: Identity) -> Self {
        Self { store, identity }
    }

    /// The user's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<User>(id)
    }

    async fn reserve_key(
        &self,
        ctx: &CommandContext,
        stream: StreamName,
        owner: Uuid,
        what: &str,
    ) -> Result<StreamName, UserCreateError> {
        let store = self.store.clone();
        let outcome = reserve(self.store.as_ref(), &stream, owner, ctx, move |holder| {
            let store = store.clone();
            // A holder that never registered (a crash between reservation and registration)
            // gives the key up.
            async move {
                match load::<User>(store.as_ref(), &Self::stream(holder)).await {
                    Ok((User::Absent, _)) => Ok(true),
                    Ok(_) => Ok(false),
                    Err(CommandError::Store(e)) => Err(e),
                    Err(_) => Ok(false),
                }
            }
        })
        .await
        .map_err(|e| UserCreateError::User(CommandError::Store(e)))?;
        match outcome {
            Reservation::Held => Ok(stream),
            Reservation::Taken { .. } => Err(UserCreateError::User(CommandError::Conflict(
                format!("{what} is taken"),
            ))),
        }
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
    ) -> Result<bool, UserCreateError> {
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

    /// Registers a user in an organization. `actor` must be a superadmin or may manage the
    /// organization's members; only a superadmin may create a superadmin.
    #[tracing::instrument(name = "users.create", skip_all)]
    pub async fn create(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        new: NewUser,
    ) -> Result<Written<User>, UserCreateError> {
        if new.is_superadmin && !actor.is_superadmin {
            return Err(UserCreateError::SuperadminOnly);
        }
        let org_stream = stream_of::<Organization>(new.org_id);
        let (org, _) = load::<Organization>(self.store.as_ref(), &org_stream).await?;
        org.authorize(actor, Permission::Manage)
            .map_err(|e| UserCreateError::Organization(CommandError::Rejected(e)))?;

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
        let mut org_ctx = ctx.clone();
        org_ctx.org_id = new.org_id;
        execute::<Organization>(
            self.store.as_ref(),
            &org_stream,
            &org_ctx,
            None,
            OrgCommand::SetMember {
                user_id: id,
                role: new.role,
                at: ctx.occurred_at,
            },
        )
        .await?;
        // Last: the login. A failure here leaves a user who cannot log in yet (an operator
        // sets a password), never a login without a user.
        self.identity
            .add_credentials(
                id,
                new.username.as_str(),
                &email_address,
                &new.password,
                new.org_id,
                new.is_superadmin,
            )
            .await?;
        Ok(registered)
    }
}

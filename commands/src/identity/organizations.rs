//! Organizations: create (superadmins; the creator becomes owner), update (admins), delete
//! (owners), with names unique on the platform. Who may do what is the aggregate's rule
//! ([`Organization::authorize`]), checked on the state the command is decided on.

use std::sync::Arc;

use atelier_domain::identity::organization::{OrgCommand, OrgError, OrgProfile, Organization};
use atelier_domain::identity::user::User;
use atelier_domain::identity::{Actor, Permission, Role};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{PLATFORM, claim, release_quietly, reservation_stream, settle_key_change};

/// An organization command's error.
pub type OrgCommandError = CommandError<OrgError>;

/// The reservation of an organization's name (by its key, [`OrgName::key`]).
///
/// [`OrgName::key`]: atelier_domain::identity::organization::OrgName::key
pub fn name_reservation(key: &str) -> StreamName {
    reservation_stream("org-name", PLATFORM, key)
}

/// Creates, updates and deletes organizations.
#[derive(Clone)]
pub struct OrganizationService {
    store: Arc<dyn EventStore>,
}

impl OrganizationService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// The organization's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Organization>(id)
    }

    /// Reserves an organization name on the platform; a holder that no longer uses it (never
    /// created, deleted, renamed) gives it up.
    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        profile: &OrgProfile,
    ) -> Result<StreamName, OrgCommandError> {
        let key = profile.name.key();
        claim(
            self.store.as_ref(),
            name_reservation(&key),
            owner,
            ctx,
            |o: &Organization| o.data().is_some_and(|o| o.profile.name.key() == key),
            || {
                format!(
                    "an organization named {:?} already exists",
                    profile.name.as_str()
                )
            },
        )
        .await
    }

    async fn authorized(
        &self,
        id: Uuid,
        actor: &Actor,
        permission: Permission,
    ) -> Result<Organization, OrgCommandError> {
        let (state, _) = load::<Organization>(self.store.as_ref(), &Self::stream(id)).await?;
        state
            .authorize(actor, permission)
            .map_err(CommandError::Rejected)?;
        Ok(state)
    }

    /// Creates an organization with a new id; only a superadmin may, and becomes its owner.
    /// The context's organization must be the new one's id (its events belong to it).
    pub async fn create(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        profile: OrgProfile,
    ) -> Result<Written<Organization>, OrgCommandError> {
        if !actor.is_superadmin {
            return Err(CommandError::Rejected(OrgError::Forbidden(Permission::Own)));
        }
        let id = ctx.org_id;
        let reservation = self.reserve_name(ctx, id, &profile).await?;
        let command = OrgCommand::Create {
            org_id: id,
            profile,
            owner: actor.user_id,
            at: ctx.occurred_at,
        };
        let written =
            execute::<Organization>(self.store.as_ref(), &Self::stream(id), ctx, None, command)
                .await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Replaces what an organization says of itself; admins and owners may.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        id: Uuid,
        if_match: Option<u64>,
        profile: OrgProfile,
    ) -> Result<Written<Organization>, OrgCommandError> {
        let current = self.authorized(id, actor, Permission::Manage).await?;
        let current_key = current
            .data()
            .map(|o| o.profile.name.key())
            .unwrap_or_default();
        let renamed = profile.name.key() != current_key;
        let new_reservation = if renamed {
            Some(self.reserve_name(ctx, id, &profile).await?)
        } else {
            None
        };
        let command = OrgCommand::Update {
            profile,
            at: ctx.occurred_at,
        };
        let written = execute::<Organization>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await;
        settle_key_change(self.store.as_ref(), id, &written, new_reservation, |w| {
            let (before, after) = (w.previous.data()?, w.state.data()?);
            (before.profile.name.key() != after.profile.name.key())
                .then(|| name_reservation(&before.profile.name.key()))
        })
        .await;
        written
    }

    /// Adds a member or changes a member's role; admins may, but only owners make or unmake
    /// owners. The user must exist.
    pub async fn set_member(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        id: Uuid,
        user_id: Uuid,
        role: Role,
    ) -> Result<Written<Organization>, OrgCommandError> {
        let current = self.authorized(id, actor, Permission::Manage).await?;
        if role == Role::Owner || current.role_of(user_id) == Some(Role::Owner) {
            current
                .authorize(actor, Permission::Own)
                .map_err(CommandError::Rejected)?;
        }
        let (user, _) = load::<User>(self.store.as_ref(), &stream_of::<User>(user_id))
            .await
            .map_err(|e| CommandError::Conflict(e.to_string()))?;
        if user.data().is_none() {
            return Err(CommandError::Rejected(OrgError::NoSuchUser));
        }
        execute::<Organization>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            OrgCommand::SetMember {
                user_id,
                role,
                at: ctx.occurred_at,
            },
        )
        .await
    }

    /// Removes a member; admins may, but only owners remove owners (never the last one).
    pub async fn remove_member(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        id: Uuid,
        user_id: Uuid,
    ) -> Result<Written<Organization>, OrgCommandError> {
        let current = self.authorized(id, actor, Permission::Manage).await?;
        if current.role_of(user_id) == Some(Role::Owner) {
            current
                .authorize(actor, Permission::Own)
                .map_err(CommandError::Rejected)?;
        }
        execute::<Organization>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            OrgCommand::RemoveMember {
                user_id,
                at: ctx.occurred_at,
            },
        )
        .await
    }

    /// Deactivates or reactivates an organization; only its owners (or a superadmin) may. A
    /// deactivated organization's members can no longer act in it (a superadmin still can).
    pub async fn set_active(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        id: Uuid,
        active: bool,
    ) -> Result<Written<Organization>, OrgCommandError> {
        self.authorized(id, actor, Permission::Own).await?;
        execute::<Organization>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            OrgCommand::SetActive {
                active,
                at: ctx.occurred_at,
            },
        )
        .await
    }

    /// Deletes an organization; only its owners (or a superadmin) may. Its name is free again.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Organization>, OrgCommandError> {
        self.authorized(id, actor, Permission::Own).await?;
        let written = execute::<Organization>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            OrgCommand::Delete {
                at: ctx.occurred_at,
            },
        )
        .await?;
        if let Some(before) = written.previous.data() {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(&before.profile.name.key()),
                id,
            )
            .await;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_domain::identity::organization::{JsonObject, OrgName};
    use atelier_store::memory::MemoryEventStore;

    fn profile(name: &str) -> OrgProfile {
        OrgProfile {
            name: OrgName::parse(name).unwrap(),
            description: None,
            settings: JsonObject::default(),
            quotas: JsonObject::default(),
        }
    }

    fn root() -> Actor {
        Actor {
            user_id: Uuid::from_u128(1),
            is_superadmin: true,
        }
    }

    fn ctx(org: Uuid) -> CommandContext {
        CommandContext::new(org, "user-1")
    }

    #[tokio::test]
    async fn only_a_superadmin_creates_organizations_and_names_are_unique_whatever_their_case() {
        let s = OrganizationService::new(Arc::new(MemoryEventStore::new()));
        let nobody = Actor {
            user_id: Uuid::from_u128(2),
            is_superadmin: false,
        };
        let err = s
            .create(&ctx(Uuid::now_v7()), &nobody, profile("Acme"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::Rejected(OrgError::Forbidden(_))),
            "{err:?}"
        );
        let made = s
            .create(&ctx(Uuid::now_v7()), &root(), profile("Acme"))
            .await
            .unwrap();
        assert_eq!(
            made.state.role_of(root().user_id),
            Some(atelier_domain::identity::Role::Owner)
        );
        let err = s
            .create(&ctx(Uuid::now_v7()), &root(), profile(" ACME "))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Conflict(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_deleted_or_renamed_organization_frees_its_name_and_strangers_get_not_found() {
        let s = OrganizationService::new(Arc::new(MemoryEventStore::new()));
        let id = Uuid::now_v7();
        s.create(&ctx(id), &root(), profile("Acme")).await.unwrap();
        let stranger = Actor {
            user_id: Uuid::from_u128(3),
            is_superadmin: false,
        };
        let err = s
            .update(&ctx(id), &stranger, id, None, profile("Mine"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::Rejected(OrgError::NotFound)),
            "{err:?}"
        );
        s.update(&ctx(id), &root(), id, None, profile("Acme Corp"))
            .await
            .unwrap();
        s.create(&ctx(Uuid::now_v7()), &root(), profile("Acme"))
            .await
            .unwrap();
        s.delete(&ctx(id), &root(), id, None).await.unwrap();
        s.create(&ctx(Uuid::now_v7()), &root(), profile("Acme Corp"))
            .await
            .unwrap();
    }
}

//! Who may do what, right now: the state of a caller's session or API key, of their user and of
//! the organization they act in, read from those aggregates' streams on every request. A
//! logout, a revoked key, a removed member or a deactivated user therefore counts from the next
//! request on, not when a token expires or a projection catches up.
//!
//! Each stream's folded state is cached; a request brings it up to date by reading only the
//! events after the cached revision (one indexed query that usually returns nothing), so a
//! large organization is not replayed per request.

use std::sync::Arc;

use atelier_domain::identity::api_key::ApiKey;
use atelier_domain::identity::organization::Organization;
use atelier_domain::identity::session::Session;
use atelier_domain::identity::user::User;
use atelier_domain::{Aggregate, DomainEvent, EventDecodeError};
use atelier_store::{ReadStream, StoreError, StreamFrom};
use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::handler::{Store, stream_of};

/// How many aggregates of each kind stay cached.
pub const CACHE_CAPACITY: usize = 10_000;

/// Why the current state of an aggregate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read.
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
}

/// The current state of aggregates of one kind, cached and caught up on each read.
struct Current<A: Aggregate> {
    cache: Cache<Uuid, (Arc<A>, Option<u64>)>,
}

impl<A> Current<A>
where
    A: Aggregate + Clone + Send + Sync + 'static,
{
    fn new(capacity: usize) -> Self {
        Self {
            cache: Cache::new(capacity),
        }
    }

    async fn get(&self, store: &Store, id: Uuid) -> Result<Arc<A>, AccessError> {
        self.catch_up(store, id, self.cache.get(&id)).await
    }

    /// The state, knowing the stream's last revision: the cached state when it is that far
    /// already (no read at all), else caught up.
    async fn at(&self, store: &Store, id: Uuid, last: Option<u64>) -> Result<Arc<A>, AccessError> {
        let cached = self.cache.get(&id);
        match (&cached, last) {
            (Some((state, revision)), _) if *revision == last => Ok(state.clone()),
            (None, None) => Ok(Arc::new(A::default())),
            _ => self.catch_up(store, id, cached).await,
        }
    }

    async fn catch_up(
        &self,
        store: &Store,
        id: Uuid,
        cached: Option<(Arc<A>, Option<u64>)>,
    ) -> Result<Arc<A>, AccessError> {
        let (state, revision) = cached.unwrap_or_else(|| (Arc::new(A::default()), None));
        let from = revision.map_or(StreamFrom::Start, |r| StreamFrom::Revision(r + 1));
        let recorded = store
            .read_stream(&stream_of::<A>(id), ReadStream::forward().from(from))
            .await?;
        let Some(last) = recorded.last().map(|e| e.revision) else {
            return Ok(state);
        };
        let mut next = A::clone(&state);
        for e in &recorded {
            next = next.evolve(&A::Event::decode_stored(
                &e.event_type,
                &e.metadata,
                &e.data,
            )?);
        }
        let next = Arc::new(next);
        // A concurrent request may have cached a later state; keep the latest.
        let newer_cached = self
            .cache
            .get(&id)
            .is_some_and(|(_, r)| r.is_some_and(|r| r > last));
        if !newer_cached {
            self.cache.insert(id, (next.clone(), Some(last)));
        }
        Ok(next)
    }
}

/// The current state of users, organizations, sessions and API keys, for access decisions.
pub struct Access {
    store: Store,
    users: Current<User>,
    organizations: Current<Organization>,
    sessions: Current<Session>,
    keys: Current<ApiKey>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Reads from this store, caching [`CACHE_CAPACITY`] aggregates of each kind.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            users: Current::new(CACHE_CAPACITY),
            organizations: Current::new(CACHE_CAPACITY),
            sessions: Current::new(CACHE_CAPACITY),
            keys: Current::new(CACHE_CAPACITY),
        }
    }

    /// The user as of the last event written.
    pub async fn user(&self, id: Uuid) -> Result<Arc<User>, AccessError> {
        self.users.get(&self.store, id).await
    }

    /// The organization as of the last event written.
    pub async fn organization(&self, id: Uuid) -> Result<Arc<Organization>, AccessError> {
        self.organizations.get(&self.store, id).await
    }

    /// The API key as of the last event written.
    pub async fn key(&self, id: Uuid) -> Result<Arc<ApiKey>, AccessError> {
        self.keys.get(&self.store, id).await
    }

    /// A session, its user and an organization as of the last events written: one query when
    /// none of them moved since they were cached.
    pub async fn session_access(
        &self,
        session: Uuid,
        user: Uuid,
        org: Uuid,
    ) -> Result<(Arc<Session>, Arc<User>, Arc<Organization>), AccessError> {
        self.with_user_and_org(&self.sessions, session, user, org)
            .await
    }

    /// An API key, a user (its creator) and an organization (its own) as of the last events
    /// written: one query when none of them moved since they were cached.
    pub async fn key_access(
        &self,
        key: Uuid,
        user: Uuid,
        org: Uuid,
    ) -> Result<(Arc<ApiKey>, Arc<User>, Arc<Organization>), AccessError> {
        self.with_user_and_org(&self.keys, key, user, org).await
    }

    /// A credential (session or key), a user and an organization: their streams' last
    /// revisions in one query, then a read of only those that moved.
    async fn with_user_and_org<A>(
        &self,
        credentials: &Current<A>,
        id: Uuid,
        user: Uuid,
        org: Uuid,
    ) -> Result<(Arc<A>, Arc<User>, Arc<Organization>), AccessError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
    {
        let last = self
            .store
            .last_revisions(&[
                stream_of::<A>(id),
                stream_of::<User>(user),
                stream_of::<Organization>(org),
            ])
            .await?;
        futures::try_join!(
            credentials.at(&self.store, id, last[0]),
            self.users.at(&self.store, user, last[1]),
            self.organizations.at(&self.store, org, last[2]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{CommandContext, execute};
    use atelier_domain::identity::session::{EndReason, SessionCommand};
    use atelier_store::memory::MemoryEventStore;
    use chrono::{Duration, Utc};

    #[tokio::test]
    async fn a_cached_user_sees_the_deactivation_written_after_it_was_cached() -> anyhow::Result<()>
    {
        use atelier_domain::identity::user::{Email, UserCommand, UserProfile, Username};
        let store: Store = Arc::new(MemoryEventStore::new());
        let access = Access::new(store.clone());
        let id = Uuid::now_v7();
        let ctx = CommandContext::new(Uuid::now_v7(), "test");
        let user = |command| {
            let store = store.clone();
            let ctx = ctx.clone();
            async move {
                execute::<User>(store.as_ref(), &stream_of::<User>(id), &ctx, None, command).await
            }
        };
        user(UserCommand::Register {
            user_id: id,
            username: Username::parse("ada").unwrap(),
            profile: UserProfile {
                email: Email::parse("ada@example.com").unwrap(),
                full_name: None,
            },
            is_superadmin: false,
            at: Utc::now(),
        })
        .await?;
        assert!(access.user(id).await?.data().is_some_and(|u| u.is_active));
        user(UserCommand::SetActive {
            active: false,
            at: Utc::now(),
        })
        .await?;
        assert!(access.user(id).await?.data().is_some_and(|u| !u.is_active));
        Ok(())
    }

    #[tokio::test]
    async fn a_session_cached_by_the_one_query_path_sees_its_logout_too() -> anyhow::Result<()> {
        let store: Store = Arc::new(MemoryEventStore::new());
        let access = Access::new(store.clone());
        let (id, user, org) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ctx = CommandContext::new(org, "test");
        let now = Utc::now();
        let session = |command| {
            let store = store.clone();
            let ctx = ctx.clone();
            async move {
                execute::<Session>(
                    store.as_ref(),
                    &stream_of::<Session>(id),
                    &ctx,
                    None,
                    command,
                )
                .await
            }
        };
        session(SessionCommand::Start {
            session_id: id,
            user_id: user,
            org_id: org,
            at: now,
            expires_at: now + Duration::hours(1),
        })
        .await?;
        let (s, u, o) = access.session_access(id, user, org).await?;
        assert!(matches!(*s, Session::Active(_)));
        assert_eq!((&*u, &*o), (&User::Absent, &Organization::Absent));
        session(SessionCommand::End {
            reason: EndReason::Logout,
            at: now,
        })
        .await?;
        let (s, _, _) = access.session_access(id, user, org).await?;
        assert_eq!(*s, Session::Ended(EndReason::Logout));
        Ok(())
    }

    #[tokio::test]
    async fn an_aggregate_never_written_reads_as_absent() -> anyhow::Result<()> {
        let access = Access::new(Arc::new(MemoryEventStore::new()));
        assert_eq!(*access.user(Uuid::now_v7()).await?, User::Absent);
        Ok(())
    }
}

//! Who may do what, right now: the state of a caller's session or API key, of their user and of
//! the organization they act in, read from those aggregates' streams on every request. A
//! logout, a revoked key, a removed member or a deactivated user therefore counts from the next
//! request on, not when a token expires or a projection catches up.
//!
//! Each stream's folded state is cached; a request brings it up to date by reading only the
//! events after the cached revision (one indexed query that usually returns nothing), so a
//! large organization is not replayed per request.
//!
//! A caller's whole answer (credential, user, organization) is then trusted without any query
//! for [`DEFAULT_RECHECK`] (`ATELIER_ACCESS_RECHECK_MS`), unless this server writes to an
//! identity stream meanwhile: the store tells [`Access`] of each of its writes before the
//! writer gets its answer ([`atelier_store::FoldCache::on_written`]), and every answer trusted
//! so far is checked again. So a logout, a revoked key, a deactivation or a removed member made
//! through this server counts from the next request, as before; one written by another process
//! (the CLI, another server) counts at most that long after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// How long a caller's checked answer is trusted without a query, unless this server writes an
/// identity stream meanwhile.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(1);

/// The categories whose writes make every trusted answer checked again.
const IDENTITY_CATEGORIES: [&str; 4] = [
    User::CATEGORY,
    Organization::CATEGORY,
    Session::CATEGORY,
    ApiKey::CATEGORY,
];

/// A caller's answer as last checked: the credential, the user, the organization, and when and
/// under which epoch of identity writes it was checked.
#[derive(Clone)]
struct Checked<A> {
    answer: (Arc<A>, Arc<User>, Arc<Organization>),
    epoch: u64,
    at: Instant,
}

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
    /// Answers checked lately, by (credential, user, organization).
    session_answers: Cache<(Uuid, Uuid, Uuid), Checked<Session>>,
    key_answers: Cache<(Uuid, Uuid, Uuid), Checked<ApiKey>>,
    /// Moves each time this server writes an identity stream.
    epoch: Arc<AtomicU64>,
    recheck: Duration,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Reads from this store, caching [`CACHE_CAPACITY`] aggregates of each kind and trusting
    /// an answer for [`DEFAULT_RECHECK`].
    pub fn new(store: Store) -> Self {
        Self::with_recheck(store, DEFAULT_RECHECK)
    }

    /// Reads from this store, trusting a caller's answer for `recheck` at most (zero: every
    /// request checks).
    pub fn with_recheck(store: Store, recheck: Duration) -> Self {
        let epoch = Arc::new(AtomicU64::new(0));
        let recheck = match store.folds() {
            Some(folds) => {
                let moved = Arc::downgrade(&epoch);
                folds.on_written(move |stream| {
                    if IDENTITY_CATEGORIES.contains(&stream.category())
                        && let Some(epoch) = moved.upgrade()
                    {
                        epoch.fetch_add(1, Ordering::SeqCst);
                    }
                });
                recheck
            }
            None => {
                tracing::info!("the store tells nothing of its writes: every request checks");
                Duration::ZERO
            }
        };
        Self {
            store,
            users: Current::new(CACHE_CAPACITY),
            organizations: Current::new(CACHE_CAPACITY),
            sessions: Current::new(CACHE_CAPACITY),
            keys: Current::new(CACHE_CAPACITY),
            session_answers: Cache::new(CACHE_CAPACITY),
            key_answers: Cache::new(CACHE_CAPACITY),
            epoch,
            recheck,
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
        self.trusted_or_checked(&self.session_answers, &self.sessions, session, user, org)
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
        self.trusted_or_checked(&self.key_answers, &self.keys, key, user, org)
            .await
    }

    /// The answer checked lately if it is still trusted, else checked now.
    async fn trusted_or_checked<A>(
        &self,
        answers: &Cache<(Uuid, Uuid, Uuid), Checked<A>>,
        credentials: &Current<A>,
        id: Uuid,
        user: Uuid,
        org: Uuid,
    ) -> Result<(Arc<A>, Arc<User>, Arc<Organization>), AccessError>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
    {
        // Read before the check: a write after this moment makes the answer untrusted.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let key = (id, user, org);
        if !self.recheck.is_zero()
            && let Some(checked) = answers.get(&key)
            && checked.epoch == epoch
            && checked.at.elapsed() < self.recheck
        {
            return Ok(checked.answer);
        }
        let started = Instant::now();
        let answer = self.with_user_and_org(credentials, id, user, org).await?;
        if !self.recheck.is_zero() {
            let checked = Checked {
                answer: answer.clone(),
                epoch,
                at: started,
            };
            answers.insert(key, checked);
        }
        Ok(answer)
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

    /// A started session, the store it is in, and its (session, user, organization).
    async fn started(store: &Arc<MemoryEventStore>) -> anyhow::Result<(Uuid, Uuid, Uuid)> {
        let (id, user, org) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = Utc::now();
        execute::<Session>(
            store.as_ref(),
            &stream_of::<Session>(id),
            &CommandContext::new(org, "test"),
            None,
            SessionCommand::Start {
                session_id: id,
                user_id: user,
                org_id: org,
                at: now,
                expires_at: now + Duration::hours(1),
            },
        )
        .await?;
        Ok((id, user, org))
    }

    #[tokio::test]
    async fn a_checked_answer_is_trusted_without_a_query_until_the_recheck() -> anyhow::Result<()> {
        let store = Arc::new(MemoryEventStore::new());
        let access = Access::with_recheck(store.clone(), std::time::Duration::from_secs(3600));
        let (id, user, org) = started(&store).await?;
        access.session_access(id, user, org).await?;
        // Any read now would fail.
        store.fail_next_stream_reads(3);
        let (s, _, _) = access.session_access(id, user, org).await?;
        assert!(matches!(*s, Session::Active(_)));
        Ok(())
    }

    #[tokio::test]
    async fn with_no_recheck_time_every_request_checks() -> anyhow::Result<()> {
        let store = Arc::new(MemoryEventStore::new());
        let access = Access::with_recheck(store.clone(), std::time::Duration::ZERO);
        let (id, user, org) = started(&store).await?;
        access.session_access(id, user, org).await?;
        store.fail_next_stream_reads(3);
        assert!(access.session_access(id, user, org).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_write_to_another_identity_stream_makes_every_answer_checked_again()
    -> anyhow::Result<()> {
        let store = Arc::new(MemoryEventStore::new());
        let access = Access::with_recheck(store.clone(), std::time::Duration::from_secs(3600));
        let (id, user, org) = started(&store).await?;
        access.session_access(id, user, org).await?;
        // Someone else logs in: a session stream is written.
        started(&store).await?;
        store.fail_next_stream_reads(3);
        assert!(
            access.session_access(id, user, org).await.is_err(),
            "the answer was trusted after an identity write"
        );
        Ok(())
    }
}

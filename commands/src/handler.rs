//! Load → decide → append, with the expected revision, retried on conflicts.

use std::sync::Arc;

use atelier_domain::{Aggregate, DomainEvent, EventDecodeError};
use atelier_store::{
    EventData, EventStore, ExpectedRevision, Position, ReadStream, StoreError, StreamName,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use uuid::Uuid;

/// How many times a command is decided again after another writer got there first.
pub const MAX_ATTEMPTS: usize = 5;

/// Who asks, for whom, and as part of what: recorded in every event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The organization (tenant) the command acts for.
    pub org_id: Uuid,
    /// The user or API key acting.
    pub actor: String,
    /// Groups everything one request caused.
    pub correlation_id: Uuid,
    /// The event or command that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// The HTTP request, if any.
    pub request_id: Option<String>,
    /// The credential the actor used: `session:<id>` for a person's login session,
    /// `apikey:<id>` for an API key (`None`: a worker, or a request before any login).
    pub credential: Option<String>,
    /// When the command was issued.
    pub occurred_at: DateTime<Utc>,
}

impl CommandContext {
    /// A context for `actor` acting in `org_id`, now.
    pub fn new(org_id: Uuid, actor: impl Into<String>) -> Self {
        Self {
            org_id,
            actor: actor.into(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            request_id: None,
            credential: None,
            // Microseconds: what PostgreSQL keeps, so answers and read models agree.
            occurred_at: Utc::now().trunc_subsecs(6),
        }
    }

    /// Sets the request id (it also becomes the correlation id when it is a UUID).
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        let id = request_id.into();
        if let Ok(uuid) = Uuid::parse_str(&id) {
            self.correlation_id = uuid;
        }
        self.request_id = Some(id);
        self
    }

    /// Sets the credential the actor used (`session:<id>`, `apikey:<id>`).
    pub fn with_credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// The metadata of one event.
    pub fn metadata(&self, schema: u32) -> serde_json::Value {
        self.metadata_with_parents(schema, &[])
    }

    /// The metadata of one event of an aggregate that belongs to these resources (see
    /// [`Aggregate::parents`]): `parents` maps each category to the id.
    pub fn metadata_with_parents(
        &self,
        schema: u32,
        parents: &[(&'static str, Uuid)],
    ) -> serde_json::Value {
        let mut metadata = json!({
            "org_id": self.org_id,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "request_id": self.request_id,
            "schema": schema,
            "occurred_at": self.occurred_at,
        });
        if let Some(credential) = &self.credential {
            metadata["credential"] = json!(credential);
        }
        if !parents.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = parents
                .iter()
                .map(|(category, id)| ((*category).to_owned(), json!(id)))
                .collect();
            metadata["parents"] = serde_json::Value::Object(map);
        }
        metadata
    }

    /// Turns the events of an aggregate that belongs to `parents` into events to append.
    pub fn encode<E: DomainEvent>(
        &self,
        events: &[E],
        parents: &[(&'static str, Uuid)],
    ) -> Vec<EventData> {
        events
            .iter()
            .map(|e| {
                let (ty, data) = e.encode();
                EventData::new(ty, data)
                    .with_metadata(self.metadata_with_parents(E::SCHEMA_VERSION, parents))
            })
            .collect()
    }
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused it.
    #[error(transparent)]
    Rejected(E),
    /// The caller's `If-Match` revision is not the aggregate's.
    #[error("the resource is at revision {actual:?}, not {expected}")]
    PreconditionFailed {
        /// What the caller expected.
        expected: u64,
        /// Where it is (`None`: it does not exist).
        actual: Option<u64>,
    },
    /// A field the domain accepts but this server's configuration refuses (a repository on the
    /// server's disk where local repositories are not allowed…).
    #[error(transparent)]
    Invalid(atelier_domain::value::InvalidValue),
    /// A uniqueness rule refused it (a name already taken…).
    #[error("{0}")]
    Conflict(String),
    /// Other writers kept changing the aggregate; the command was not applied.
    #[error("too many concurrent changes to {stream}; try again")]
    Contention {
        /// The stream.
        stream: String,
    },
    /// A stored event could not be read.
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E: std::error::Error + 'static> CommandError<E> {
    /// The same error, the domain's refusal turned into another type (a service that loads one
    /// aggregate to decide on another).
    pub fn map_rejected<F: std::error::Error + 'static>(
        self,
        f: impl FnOnce(E) -> F,
    ) -> CommandError<F> {
        match self {
            CommandError::Rejected(e) => CommandError::Rejected(f(e)),
            CommandError::PreconditionFailed { expected, actual } => {
                CommandError::PreconditionFailed { expected, actual }
            }
            CommandError::Invalid(v) => CommandError::Invalid(v),
            CommandError::Conflict(c) => CommandError::Conflict(c),
            CommandError::Contention { stream } => CommandError::Contention { stream },
            CommandError::Decode(e) => CommandError::Decode(e),
            CommandError::Store(e) => CommandError::Store(e),
        }
    }
}

/// The outcome of a command that was accepted.
#[derive(Debug, Clone)]
pub struct Written<A> {
    /// The state before.
    pub previous: A,
    /// The state after.
    pub state: A,
    /// The aggregate's revision after (`None`: it has no events).
    pub revision: Option<u64>,
    /// Where the last event landed in `$all` (`None`: nothing was written).
    pub position: Option<Position>,
}

/// Loads an aggregate: its state and revision.
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<(A, Option<u64>), CommandError<A::Error>> {
    let recorded = store.read_stream(stream, ReadStream::forward()).await?;
    let revision = recorded.last().map(|e| e.revision);
    let mut state = A::default();
    for e in &recorded {
        state = state.evolve(&A::Event::decode_stored(
            &e.event_type,
            &e.metadata,
            &e.data,
        )?);
    }
    Ok((state, revision))
}

/// Runs a command against an aggregate: load, decide, append with the expected revision; on a
/// conflict, load and decide again (at most [`MAX_ATTEMPTS`] times). With `if_match`, the
/// aggregate must be at that revision, and a conflict is not retried.
///
/// The state comes from the store's fold cache ([`atelier_store::FoldCache`]) when it holds the
/// stream, so that a command on a stream this server wrote last costs one round trip (the
/// append). The cached state is only a guess: the one outcome taken from it is an append the
/// store accepts at exactly its revision. A conflict, a refusal, a precondition that does not
/// hold or a command with nothing to do is decided again on a fresh read.
///
/// A connection lost on the way is retried once: a load from the start, an append with the
/// very same events (same ids, same expected revision), which the store recognizes if the
/// first one had committed after all, so the command never takes effect twice.
#[tracing::instrument(name = "command", skip_all, fields(stream = %stream, aggregate = A::CATEGORY, cached))]
pub async fn execute<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamName,
    ctx: &CommandContext,
    if_match: Option<u64>,
    command: A::Command,
) -> Result<Written<A>, CommandError<A::Error>>
where
    A::Command: Clone,
{
    let mut cached = cached::<A>(store, stream);
    tracing::Span::current().record("cached", cached.is_some());
    let mut reconnect = true;
    let mut attempts = 0;
    while attempts < MAX_ATTEMPTS {
        let guess = cached.take();
        let from_cache = guess.is_some();
        let (state, revision) = match guess {
            Some(folded) => (folded.0.clone(), Some(folded.1)),
            None => {
                attempts += 1;
                match load::<A>(store, stream).await {
                    Err(CommandError::Store(e)) if reconnect && e.is_connection_lost() => {
                        tracing::warn!(error = %e, "connection lost while loading; trying once more");
                        reconnect = false;
                        attempts -= 1;
                        continue;
                    }
                    loaded => {
                        let (state, revision) = loaded?;
                        if let (Some(folds), Some(revision)) = (store.folds(), revision) {
                            folds.insert(stream, Arc::new((state.clone(), revision)));
                        }
                        (state, revision)
                    }
                }
            }
        };
        if let Some(expected) = if_match
            && revision != Some(expected)
        {
            if from_cache {
                continue;
            }
            return Err(CommandError::PreconditionFailed {
                expected,
                actual: revision,
            });
        }
        let events = match state.decide(command.clone()) {
            Ok(events) => events,
            Err(_) if from_cache => continue,
            Err(e) => return Err(CommandError::Rejected(e)),
        };
        if events.is_empty() {
            if from_cache {
                continue;
            }
            return Ok(Written {
                previous: state.clone(),
                state,
                revision,
                position: None,
            });
        }
        let expected = revision.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
        let after = events.iter().fold(state.clone(), |s, e| s.evolve(e));
        let data = ctx.encode(&events, &after.parents());
        let mut appended = store.append(stream, expected, data.clone()).await;
        if reconnect && matches!(&appended, Err(e) if e.is_connection_lost()) {
            tracing::warn!("connection lost while appending; appending the same events once more");
            reconnect = false;
            appended = store.append(stream, expected, data).await;
        }
        match appended {
            Ok(r) => {
                if let Some(folds) = store.folds() {
                    folds.insert(stream, Arc::new((after.clone(), r.next_expected_revision)));
                }
                return Ok(Written {
                    previous: state,
                    state: after,
                    revision: Some(r.next_expected_revision),
                    position: Some(r.position),
                });
            }
            Err(StoreError::WrongExpectedRevision { actual, .. }) => {
                if let Some(folds) = store.folds() {
                    folds.forget(stream);
                }
                if from_cache {
                    tracing::debug!("the cached state was behind the stream; reading it");
                    continue;
                }
                if let Some(expected) = if_match {
                    return Err(CommandError::PreconditionFailed { expected, actual });
                }
                tracing::debug!("another writer changed the aggregate; deciding again");
            }
            Err(e) => {
                if let Some(folds) = store.folds() {
                    folds.forget(stream);
                }
                return Err(e.into());
            }
        }
    }
    Err(CommandError::Contention {
        stream: stream.to_string(),
    })
}

/// The state and revision the store's fold cache holds for `stream`, if any.
fn cached<A: Aggregate>(store: &dyn EventStore, stream: &StreamName) -> Option<Arc<(A, u64)>> {
    store.folds()?.get::<(A, u64)>(stream)
}

/// An aggregate as the fold cache has it (`true`), else as read from the store (`false`). A
/// caller that decides anything from a cached state must have it confirmed by an append at
/// that revision (pass it to [`execute`] as `if_match`), and read again (with [`load`]) before
/// it refuses anything because of it.
pub async fn load_guess<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<(A, Option<u64>, bool), CommandError<A::Error>> {
    if let Some(folded) = cached::<A>(store, stream) {
        return Ok((folded.0.clone(), Some(folded.1), true));
    }
    let (state, revision) = load::<A>(store, stream).await?;
    Ok((state, revision, false))
}

/// The stream of an aggregate.
pub fn stream_of<A: Aggregate>(id: Uuid) -> StreamName {
    StreamName::new(format!("{}-{id}", A::CATEGORY))
        .expect("a category and a UUID make a valid stream name")
}

/// A shared event store.
pub type Store = Arc<dyn EventStore>;

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_domain::factory::project::{Project, ProjectCommand, ProjectName, RepoUrl};
    use atelier_store::memory::MemoryEventStore;

    fn create(id: Uuid) -> ProjectCommand {
        ProjectCommand::Create {
            project_id: id,
            org_id: Uuid::from_u128(1),
            name: ProjectName::parse("demo").unwrap(),
            repo_url: RepoUrl::parse("https://example.com/demo.git").unwrap(),
            build_command: None,
            at: Utc::now(),
        }
    }

    async fn run(
        store: &MemoryEventStore,
        id: Uuid,
    ) -> Result<Written<Project>, CommandError<<Project as Aggregate>::Error>> {
        let ctx = CommandContext::new(Uuid::from_u128(1), "user-1");
        execute::<Project>(store, &stream_of::<Project>(id), &ctx, None, create(id)).await
    }

    async fn events_of(store: &MemoryEventStore, id: Uuid) -> usize {
        store
            .read_stream(&stream_of::<Project>(id), ReadStream::forward())
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn a_command_whose_connection_broke_before_the_commit_is_appended_on_the_second_try() {
        let store = MemoryEventStore::new();
        store.fail_next_appends(1);
        let id = Uuid::now_v7();
        let written = run(&store, id).await.unwrap();
        assert_eq!(written.revision, Some(0));
        assert_eq!(events_of(&store, id).await, 1);
    }

    #[tokio::test]
    async fn a_command_whose_commit_answer_was_lost_takes_effect_once() {
        let store = MemoryEventStore::new();
        store.lose_next_append_acks(1);
        let id = Uuid::now_v7();
        let written = run(&store, id).await.unwrap();
        assert_eq!(written.revision, Some(0));
        assert!(written.position.is_some());
        assert_eq!(
            events_of(&store, id).await,
            1,
            "the retry wrote nothing more"
        );
    }

    #[tokio::test]
    async fn a_connection_lost_twice_fails_the_command_with_nothing_written() {
        let store = MemoryEventStore::new();
        store.fail_next_appends(2);
        let id = Uuid::now_v7();
        match run(&store, id).await {
            Err(CommandError::Store(e)) => assert!(e.is_connection_lost(), "{e}"),
            other => panic!("expected a lost connection, got {other:?}"),
        }
        assert_eq!(events_of(&store, id).await, 0);
    }
    fn update(name: &str) -> ProjectCommand {
        ProjectCommand::Update {
            org_id: Uuid::from_u128(1),
            name: ProjectName::parse(name).unwrap(),
            repo_url: RepoUrl::parse("https://example.com/demo.git").unwrap(),
            build_command: None,
            at: Utc::now(),
        }
    }

    async fn run_update(
        store: &MemoryEventStore,
        id: Uuid,
        if_match: Option<u64>,
        name: &str,
    ) -> Result<Written<Project>, CommandError<<Project as Aggregate>::Error>> {
        let ctx = CommandContext::new(Uuid::from_u128(1), "user-1");
        execute::<Project>(
            store,
            &stream_of::<Project>(id),
            &ctx,
            if_match,
            update(name),
        )
        .await
    }

    fn name_of(p: &Project) -> String {
        p.active()
            .map(|p| p.name.as_str().to_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_command_on_a_stream_this_store_wrote_last_is_decided_without_reading_it() {
        let store = MemoryEventStore::new();
        let id = Uuid::now_v7();
        run(&store, id).await.unwrap();
        // A read now would fail, even when tried again.
        store.fail_next_stream_reads(2);
        let written = run_update(&store, id, Some(0), "renamed").await.unwrap();
        assert_eq!(written.revision, Some(1));
        assert_eq!(name_of(&written.previous), "demo");
        assert_eq!(name_of(&written.state), "renamed");
    }

    /// Puts back the state the cache had at revision 0: as if another server had written since.
    async fn make_the_cache_stale(store: &MemoryEventStore, id: Uuid) {
        let stream = stream_of::<Project>(id);
        run_update(store, id, None, "moved").await.unwrap();
        let mut first = Project::default();
        for e in store
            .read_stream(&stream, ReadStream::forward())
            .await
            .unwrap()
        {
            if e.revision == 0 {
                first = first.evolve(
                    &<Project as Aggregate>::Event::decode_stored(
                        &e.event_type,
                        &e.metadata,
                        &e.data,
                    )
                    .unwrap(),
                );
            }
        }
        assert_eq!(name_of(&first), "demo");
        store
            .folds()
            .unwrap()
            .insert(&stream, Arc::new((first, 0u64)));
    }

    #[tokio::test]
    async fn a_cached_state_another_writer_moved_on_is_read_again_before_deciding() {
        let store = MemoryEventStore::new();
        let id = Uuid::now_v7();
        run(&store, id).await.unwrap();
        make_the_cache_stale(&store, id).await;
        let written = run_update(&store, id, None, "again").await.unwrap();
        assert_eq!(written.revision, Some(2));
        assert_eq!(
            name_of(&written.previous),
            "moved",
            "decided on the stream, not the cache"
        );
    }

    #[tokio::test]
    async fn a_precondition_is_checked_against_the_stream_not_a_stale_cache() {
        let store = MemoryEventStore::new();
        let id = Uuid::now_v7();
        run(&store, id).await.unwrap();
        make_the_cache_stale(&store, id).await;
        // The caller saw revision 1 (the stream's): it holds.
        assert_eq!(
            run_update(&store, id, Some(1), "seen")
                .await
                .unwrap()
                .revision,
            Some(2)
        );
        make_the_cache_stale(&store, id).await;
        // Revision 0 is the stale cache's, not the stream's (3): refused.
        match run_update(&store, id, Some(0), "late").await {
            Err(CommandError::PreconditionFailed { expected, actual }) => {
                assert_eq!((expected, actual), (0, Some(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refusal_from_a_stale_cached_state_is_checked_against_the_stream() {
        let store = MemoryEventStore::new();
        let id = Uuid::now_v7();
        run(&store, id).await.unwrap();
        // The cache says there is no project at revision 0; the stream has one.
        store.folds().unwrap().insert(
            &stream_of::<Project>(id),
            Arc::new((Project::default(), 0u64)),
        );
        let written = run_update(&store, id, None, "found").await.unwrap();
        assert_eq!(written.revision, Some(1));
        assert_eq!(name_of(&written.state), "found");
    }
}

//! Uniqueness across aggregates: a reservation stream per unique key, appended with `NoStream`
//! by whoever takes the key first, soft-deleted when it is released. It works the same on every
//! store adapter.
//!
//! A stream is named by the key's UUIDv5, so the key functions ([`Username::key`],
//! [`Email::key`], [`OrgName::key`], [`ProjectName::key`]) are part of the stored data. They
//! changed once: names are now keyed by their confusable skeleton (UTS #39) instead of their
//! lowercase form. Reservations written before that sit under the old key: they are never
//! released by the new code (a rename or delete releases the new key's stream) and never
//! consulted, so a name registered before the change does not block a new name that only its
//! new key would have matched, not even its own exact spelling, until it is renamed (which
//! reserves the new key). The bootstrap superadmin's username and email are reserved again at
//! every start, so they are covered. There was no production data when the key changed; a
//! database from before would need its names reserved again under the new keys.
//!
//! [`Username::key`]: atelier_domain::identity::user::Username::key
//! [`Email::key`]: atelier_domain::identity::user::Email::key
//! [`OrgName::key`]: atelier_domain::identity::organization::OrgName::key
//! [`ProjectName::key`]: atelier_domain::factory::project::ProjectName::key

use std::future::Future;

use atelier_store::{
    EventData, EventStore, ExpectedRevision, ReadStream, StoreError, StreamFrom, StreamName,
};
use serde_json::json;
use uuid::Uuid;

use atelier_domain::Aggregate;

use crate::handler::{CommandContext, CommandError, load, stream_of};

const RESERVED: &str = "Reserved";

/// The namespace of keys unique on the whole platform (organization names, usernames, emails)
/// rather than within one organization.
pub const PLATFORM: Uuid = Uuid::nil();

/// The reservation stream of `key` of this kind in an organization:
/// `reservation-{kind}-{UUIDv5(org, key)}`, so any key fits in a stream name.
pub fn reservation_stream(kind: &str, org_id: Uuid, key: &str) -> StreamName {
    let id = Uuid::new_v5(&org_id, key.as_bytes());
    StreamName::new(format!("reservation-{kind}-{id}"))
        .expect("a kind and a UUID make a valid stream name")
}

/// The outcome of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key is now held by the owner.
    Held,
    /// Another owner holds it.
    Taken {
        /// Who.
        holder: Uuid,
    },
}

/// Who holds the key `stream` reserves, with the reservation's revision (`None`: nobody). The
/// holder may have given the key up without releasing it (a stale reservation): check it.
pub async fn holder(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<Option<(Uuid, u64)>, StoreError> {
    let last = store
        .read_stream(stream, ReadStream::backward().from(StreamFrom::End).max(1))
        .await?;
    Ok(last.first().and_then(|e| {
        e.data
            .get("owner")
            .and_then(|o| o.as_str())
            .and_then(|o| Uuid::parse_str(o).ok())
            .map(|o| (o, e.revision))
    }))
}

/// Reserves `stream` for `owner`. A key whose holder no longer uses it (`is_stale(holder)`, for
/// instance after a crash between the reservation and the write it protected) is taken over.
pub async fn reserve<F, Fut>(
    store: &dyn EventStore,
    stream: &StreamName,
    owner: Uuid,
    ctx: &CommandContext,
    is_stale: F,
) -> Result<Reservation, StoreError>
where
    F: Fn(Uuid) -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    let event =
        || vec![EventData::new(RESERVED, json!({ "owner": owner })).with_metadata(ctx.metadata(1))];
    for _ in 0..crate::handler::MAX_ATTEMPTS {
        match store
            .append(stream, ExpectedRevision::NoStream, event())
            .await
        {
            Ok(_) => return Ok(Reservation::Held),
            Err(StoreError::WrongExpectedRevision { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some((held_by, revision)) = holder(store, stream).await? else {
            continue;
        };
        if held_by == owner {
            return Ok(Reservation::Held);
        }
        if !is_stale(held_by).await? {
            return Ok(Reservation::Taken { holder: held_by });
        }
        tracing::info!(%stream, stale_holder = %held_by, "taking over a stale reservation");
        match store
            .append(stream, ExpectedRevision::Exact(revision), event())
            .await
        {
            Ok(_) => return Ok(Reservation::Held),
            Err(StoreError::WrongExpectedRevision { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend(
        format!("reservation {stream} kept changing").into(),
    ))
}

/// Takes the unique key reserved by `stream` for `owner`, a resource of aggregate `A`, the one
/// way every context reserves its unique names: a holder whose state no longer holds the key
/// (`holds` is false on it: renamed, deleted, never created) gives it up; a key held for good
/// is a conflict, worded by `taken`. Returns the stream, to release if the write it protects
/// fails ([`settle_key_change`]).
pub async fn claim<A: Aggregate, E: std::error::Error + 'static>(
    store: &dyn EventStore,
    stream: StreamName,
    owner: Uuid,
    ctx: &CommandContext,
    holds: impl Fn(&A) -> bool,
    taken: impl FnOnce() -> String,
) -> Result<StreamName, CommandError<E>> {
    let holds = &holds;
    let outcome = reserve(store, &stream, owner, ctx, |holder| async move {
        match load::<A>(store, &stream_of::<A>(holder)).await {
            Ok((state, _)) => Ok(!holds(&state)),
            Err(CommandError::Store(e)) => Err(e),
            // A holder whose events cannot be read is not taken over.
            Err(_) => Ok(false),
        }
    })
    .await?;
    match outcome {
        Reservation::Held => Ok(stream),
        Reservation::Taken { .. } => Err(CommandError::Conflict(taken())),
    }
}

/// Releases `stream` if `owner` still holds it.
pub async fn release(
    store: &dyn EventStore,
    stream: &StreamName,
    owner: Uuid,
) -> Result<(), StoreError> {
    if let Some((held_by, revision)) = holder(store, stream).await?
        && held_by == owner
    {
        match store
            .delete_stream(stream, ExpectedRevision::Exact(revision))
            .await
        {
            // Taken over meanwhile: not ours to release any more.
            Ok(()) | Err(StoreError::WrongExpectedRevision { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Settles a change of a unique key after the write it protected: when the write succeeded, the
/// old key's reservation (`given_up`, if the write did change the key) is released; when it
/// failed, the new key's (`taken`, if one was taken). Failures to release are logged (a stale
/// reservation is taken over by the next claimant).
pub async fn settle_key_change<T, E>(
    store: &dyn EventStore,
    owner: Uuid,
    outcome: &Result<T, E>,
    taken: Option<StreamName>,
    given_up: impl FnOnce(&T) -> Option<StreamName>,
) {
    let release = match outcome {
        Ok(written) => given_up(written),
        Err(_) => taken,
    };
    if let Some(stream) = release {
        release_quietly(store, &stream, owner).await;
    }
}

/// Releases `stream` if `owner` still holds it, logging a failure instead of returning it: a
/// reservation left behind is taken over as stale by the next user of the key.
pub async fn release_quietly(store: &dyn EventStore, stream: &StreamName, owner: Uuid) {
    if let Err(e) = release(store, stream, owner).await {
        tracing::warn!(%stream, error = %e, "could not release a reservation");
    }
}

//! The first start: the superadmin's login (made by [`CredentialStore::bootstrap`]) recorded in
//! the log as a `default` organization they own and a registered superadmin, decided by the
//! aggregates like every other write, with their names reserved like every other name.

use atelier_domain::Aggregate;
use atelier_domain::identity::organization::{
    JsonObject, OrgCommand, OrgName, OrgProfile, Organization,
};
use atelier_domain::identity::user::{Email, User, UserCommand, UserProfile, Username};
use atelier_store::{EventStore, ExpectedRevision, Position, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[cfg(doc)]
use super::credentials::CredentialStore;
use super::credentials::{Bootstrap, CredentialError};
use crate::handler::{CommandContext, stream_of};

/// The name of the organization the bootstrap creates.
pub const DEFAULT_ORG_NAME: &str = "default";

/// Records what [`CredentialStore::bootstrap`] set up as events: the `default` organization
/// (`OrganizationCreated`, and `MemberAdded` with the superadmin as owner) and the superadmin
/// (`UserRegistered`), so the identity log starts where the credentials table does. Event ids
/// are derived from the organization's and the user's ids, so every start (and every server of
/// several starting at once) appends the same events, once. Returns where the last one is.
#[tracing::instrument(name = "identity.record_bootstrap", skip_all)]
pub async fn record_bootstrap(
    store: &dyn EventStore,
    bootstrap: &Bootstrap,
    admin_email: &str,
    at: DateTime<Utc>,
) -> Result<Position, CredentialError> {
    let username = Username::parse(&bootstrap.admin_username).map_err(|e| {
        CredentialError::Invalid(format!(
            "the superadmin's username {:?} {e} (3 to 50 letters, digits, `_`, `.` or `-`)",
            bootstrap.admin_username
        ))
    })?;
    let email = Email::parse(admin_email)
        .map_err(|e| CredentialError::Invalid(format!("the superadmin's email {e}")))?;
    let (username_key, email_key) = (username.key(), email.key());
    let (org_id, user_id) = (bootstrap.org_id, bootstrap.admin_user_id);
    let ctx = CommandContext::new(org_id, "system:bootstrap");
    let id = |base: Uuid, what: &str| Uuid::new_v5(&base, what.as_bytes());
    // The events are the aggregates' own decisions on empty streams, like every other write.
    let org_events = Organization::default()
        .decide(OrgCommand::Create {
            org_id,
            profile: OrgProfile {
                name: OrgName::parse(DEFAULT_ORG_NAME)
                    .map_err(|e| CredentialError::Invalid(e.to_string()))?,
                description: Some("Created by the first start".to_owned()),
                settings: JsonObject::default(),
                quotas: JsonObject::default(),
            },
            owner: user_id,
            at,
        })
        .map_err(|e| CredentialError::Invalid(e.to_string()))?;
    let org_events = ctx
        .encode(&org_events, &[])
        .into_iter()
        .zip(["bootstrap:organization", "bootstrap:owner"])
        .map(|(e, what)| e.with_id(id(org_id, what)))
        .collect();
    let user_events = User::default()
        .decide(UserCommand::Register {
            user_id,
            username,
            profile: UserProfile {
                email,
                full_name: None,
            },
            is_superadmin: true,
            at,
        })
        .map_err(|e| CredentialError::Invalid(e.to_string()))?;
    let user_events = ctx
        .encode(&user_events, &[])
        .into_iter()
        .map(|e| e.with_id(id(user_id, "bootstrap:user")))
        .collect();
    // The superadmin's username and email are taken like any user's, so nobody registers them
    // again.
    for stream in [
        super::users::username_reservation(&username_key),
        super::users::email_reservation(&email_key),
    ] {
        let outcome =
            crate::reservation::reserve(store, &stream, user_id, &ctx, |_| async { Ok(false) })
                .await?;
        if let crate::reservation::Reservation::Taken { holder } = outcome {
            return Err(CredentialError::Invalid(format!(
                "the superadmin's username or email is already taken by user {holder}"
            )));
        }
    }
    let mut last = Position::START;
    for (stream, events) in [
        (stream_of::<Organization>(org_id), org_events),
        (stream_of::<User>(user_id), user_events),
    ] {
        match store
            .append(&stream, ExpectedRevision::NoStream, events)
            .await
        {
            Ok(r) => last = last.max(r.position),
            // Recorded by an earlier start, and changed since: nothing to do.
            Err(StoreError::WrongExpectedRevision { .. }) => {}
            Err(e) => return Err(CredentialError::Store(e)),
        }
    }
    // The default organization's name is taken like any organization's, while it keeps it.
    let (org, _) = crate::handler::load::<Organization>(store, &stream_of::<Organization>(org_id))
        .await
        .map_err(|e| match e {
            crate::handler::CommandError::Store(e) => CredentialError::Store(e),
            other => CredentialError::Invalid(other.to_string()),
        })?;
    if let Organization::Present(o) = &org {
        let key = o.profile.name.key();
        if key
            == OrgName::parse(DEFAULT_ORG_NAME)
                .map(|n| n.key())
                .unwrap_or_default()
        {
            let stream = super::organizations::name_reservation(&key);
            let outcome =
                crate::reservation::reserve(store, &stream, org_id, &ctx, |_| async { Ok(false) })
                    .await?;
            if let crate::reservation::Reservation::Taken { holder } = outcome {
                tracing::warn!(%holder, "another organization holds the default organization's name");
            }
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::credentials::CredentialStore;
    use atelier_domain::identity::Role;
    use atelier_domain::identity::organization::OrgEvent;
    use atelier_store::testing::TestDatabase;

    #[tokio::test]
    async fn the_bootstrap_is_recorded_in_the_log_once_however_often_servers_start()
    -> anyhow::Result<()> {
        use atelier_domain::DomainEvent;
        use atelier_store::postgres::{PgConfig, PgEventStore};
        use atelier_store::{ReadStream, StreamName};

        let db = TestDatabase::create().await?;
        let pool = db.pool(8).await?;
        let store = PgEventStore::with_pool(pool.clone(), PgConfig::new(&db.url));
        let identity = CredentialStore::new(pool);
        let b = identity.bootstrap("admin", Some("correct horse")).await?;
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        record_bootstrap(&store, &b, "admin@example.com", at).await?;
        // A second start, and two servers starting at once.
        let again = identity.bootstrap("admin", None).await?;
        let (x, y) = tokio::join!(
            record_bootstrap(&store, &again, "admin@example.com", at),
            record_bootstrap(&store, &again, "admin@example.com", at),
        );
        x?;
        y?;
        let org = store
            .read_stream(
                &StreamName::new(format!("org-{}", b.org_id))?,
                ReadStream::forward(),
            )
            .await?;
        let types: Vec<_> = org.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["OrganizationCreated", "MemberAdded"]);
        assert_eq!(
            OrgEvent::decode_stored(&org[1].event_type, &org[1].metadata, &org[1].data)?,
            OrgEvent::MemberAdded {
                org_id: b.org_id,
                user_id: b.admin_user_id,
                role: Role::Owner,
                at
            }
        );
        assert_eq!(org[0].metadata["org_id"], serde_json::json!(b.org_id));
        let user = store
            .read_stream(
                &StreamName::new(format!("user-{}", b.admin_user_id))?,
                ReadStream::forward(),
            )
            .await?;
        assert_eq!(user.len(), 1);
        assert_eq!(user[0].data["username"], "admin");
        assert_eq!(user[0].data["is_superadmin"], true);
        // No secret: not the password, not its hash.
        let text = serde_json::to_string(&user[0].data)?;
        assert!(
            !text.contains("correct horse") && !text.contains("argon2"),
            "{text}"
        );
        Ok(())
    }
}

//! Identity's read models: organizations (with their member count), memberships, users and API
//! keys, and the queries over them. No secret is here (a key's hash stays in `api_key_secrets`).

mod api_keys;
mod organizations;
mod users;

pub use api_keys::*;
pub use organizations::*;
pub use users::*;

use std::sync::Arc;

use async_trait::async_trait;
use atelier_domain::identity::api_key::{ApiKey, KeyEvent};
use atelier_domain::identity::organization::{OrgEvent, Organization};
use atelier_domain::identity::user::{User, UserEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::RecordedEvent;
use sqlx::PgConnection;

use crate::runtime::{Projection, ProjectionError};

/// Identity's projections, as the runtime starts them.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(DirectoryProjection)]
}

/// The directory: organizations, memberships, users and API keys, one projection because its
/// queries join them (a user is visible through a membership, a member shows their username),
/// so they must answer at one checkpoint.
pub struct DirectoryProjection;

/// Its name.
pub const DIRECTORY: &str = "identity.directory";

#[async_trait]
impl Projection for DirectoryProjection {
    fn name(&self) -> &'static str {
        DIRECTORY
    }

    fn tables(&self) -> &'static [&'static str] {
        &["organizations", "memberships", "users", "api_keys"]
    }

    fn categories(&self) -> Option<&'static [&'static str]> {
        Some(&[Organization::CATEGORY, User::CATEGORY, ApiKey::CATEGORY])
    }

    fn version(&self) -> i32 {
        2
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("TRUNCATE organizations, memberships, users, api_keys")
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let revision = event.revision as i64;
        let category = event.stream.category();
        let (ty, meta, data) = (&event.event_type, &event.metadata, &event.data);
        if category == Organization::CATEGORY {
            apply_org(tx, OrgEvent::decode_stored(ty, meta, data)?, revision).await
        } else if category == User::CATEGORY {
            apply_user(tx, UserEvent::decode_stored(ty, meta, data)?, revision).await
        } else if category == ApiKey::CATEGORY {
            apply_key(tx, KeyEvent::decode_stored(ty, meta, data)?).await
        } else {
            Ok(())
        }
    }
}

/// An update that must have found its row: a missing one means the log and the read model
/// disagree, which stops the projection visibly.
fn expect_one(done: sqlx::postgres::PgQueryResult, what: &str) -> Result<(), ProjectionError> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(ProjectionError::Invalid(format!(
            "{what} is not in the read model"
        )))
    }
}

//! Identity's commands: organizations and their members ([`organizations`]), users
//! ([`users`]), login sessions ([`sessions`]), API keys ([`api_keys`]), who may do what right
//! now ([`access`]), the credentials kept beside the log ([`credentials`]) and the first
//! start ([`bootstrap`]).

pub mod access;
pub mod api_keys;
pub mod bootstrap;
pub mod credentials;
pub mod organizations;
pub mod secrets;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use atelier_store::EventStore;
use sqlx::PgPool;

pub use credentials::{CredentialError, CredentialStore};

/// Identity's write side, as the HTTP layer holds it.
#[derive(Clone)]
pub struct IdentityServices {
    /// Logins, invitations, key hashes and the JWT secret.
    pub credentials: CredentialStore,
    /// Organizations and their members.
    pub organizations: organizations::OrganizationService,
    /// Users.
    pub users: users::UserService,
    /// Login sessions.
    pub sessions: sessions::SessionService,
    /// API keys.
    pub keys: api_keys::ApiKeyService,
    /// The current state of sessions, keys, users and organizations, for access decisions
    /// (one cache per server).
    pub access: Arc<access::Access>,
}

impl IdentityServices {
    /// The services over a store and the database the credentials live in; a caller's checked
    /// access is trusted for `access_recheck` ([`access::Access::with_recheck`]).
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: PgPool,
        access_recheck: std::time::Duration,
    ) -> Self {
        let credentials = CredentialStore::new(pool);
        Self {
            organizations: organizations::OrganizationService::new(store.clone()),
            users: users::UserService::new(store.clone(), credentials.clone()),
            sessions: sessions::SessionService::new(store.clone()),
            keys: api_keys::ApiKeyService::new(store.clone(), credentials.clone()),
            access: Arc::new(access::Access::with_recheck(store, access_recheck)),
            credentials,
        }
    }
}

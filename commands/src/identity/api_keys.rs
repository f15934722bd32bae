//! API keys: created by an organization's admins for scripts and CI, shown once, revocable.
//!
//! A key reads `atk_<key id, 32 hex digits>_<secret, 64 hex digits>`. The log records that the
//! key exists (name, scopes, expiry, creator) and that it was revoked; the secret's SHA-256 hash
//! lives in the credentials side (`api_key_secrets`). A fast hash is right here: the secret is
//! 256 random bits, not a password, and it is checked on every request that presents it.

use std::collections::BTreeSet;

use atelier_domain::identity::api_key::{ApiKey, KeyCommand, KeyData, KeyError, Scope};
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::credentials::{CredentialError, CredentialStore};
use super::secrets::{random_hex, sha256};
use crate::handler::{CommandContext, CommandError, Store, Written, execute, stream_of};

/// The prefix of every key.
pub const KEY_PREFIX: &str = "atk_";

/// How many random bytes a key's secret has.
const SECRET_BYTES: usize = 32;

/// A key as created: its one and only showing.
#[derive(Clone)]
pub struct CreatedKey {
    /// The key, as the caller must keep it.
    pub key: String,
    /// What was written.
    pub written: Written<ApiKey>,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why a key could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyServiceError {
    /// The key's own rules refused.
    #[error(transparent)]
    Key(#[from] CommandError<KeyError>),
    /// Storing its secret failed.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates, checks and revokes API keys.
#[derive(Clone)]
pub struct ApiKeyService {
    store: Store,
    identity: CredentialStore,
}

impl std::fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService").finish_non_exhaustive()
    }
}

/// The key id and secret of a well-formed key.
fn parse(key: &str) -> Option<(Uuid, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let valid = id.len() == 32
        && secret.len() == 2 * SECRET_BYTES
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some(())?;
    Some((Uuid::try_parse(id).ok()?, secret))
}

impl ApiKeyService {
    /// A service writing to this store and keeping secrets through `identity`.
    pub fn new(store: Store, identity: CredentialStore) -> Self {
        Self { store, identity }
    }

    /// Creates a key in the context's organization, on behalf of `created_by`. The secret's
    /// hash is stored first: a failed append leaves no usable key (a secret without its
    /// `ApiKeyCreated` is never accepted) and is cleaned up.
    #[tracing::instrument(name = "api_keys.create", skip_all)]
    pub async fn create(
        &self,
        ctx: &CommandContext,
        created_by: Uuid,
        new: NewKey,
    ) -> Result<CreatedKey, KeyServiceError> {
        let key_id = Uuid::now_v7();
        let secret = random_hex(SECRET_BYTES);
        self.identity
            .store_key_secret(key_id, &sha256(&secret))
            .await?;
        let written = execute::<ApiKey>(
            self.store.as_ref(),
            &stream_of::<ApiKey>(key_id),
            ctx,
            None,
            KeyCommand::Create {
                key_id,
                org_id: ctx.org_id,
                name: new.name,
                scopes: new.scopes,
                expires_at: new.expires_at,
                created_by,
                at: ctx.occurred_at,
            },
        )
        .await;
        match written {
            Ok(written) => Ok(CreatedKey {
                key: format!("{KEY_PREFIX}{}_{secret}", key_id.simple()),
                written,
            }),
            Err(e) => {
                if let Err(cleanup) = self.identity.delete_key_secret(key_id).await {
                    tracing::warn!(%key_id, error = %cleanup, "an unused key secret was not deleted");
                }
                Err(e.into())
            }
        }
    }

    /// Revokes a key of the context's organization (another's is not found).
    #[tracing::instrument(name = "api_keys.revoke", skip_all, fields(%key_id))]
    pub async fn revoke(
        &self,
        ctx: &CommandContext,
        key_id: Uuid,
        by: Uuid,
    ) -> Result<Written<ApiKey>, KeyServiceError> {
        Ok(execute::<ApiKey>(
            self.store.as_ref(),
            &stream_of::<ApiKey>(key_id),
            ctx,
            None,
            KeyCommand::Revoke {
                org_id: ctx.org_id,
                by,
                at: ctx.occurred_at,
            },
        )
        .await?)
    }

    /// The id of the key this string is, if it is a well-formed key whose secret matches (its
    /// state, revoked or expired, is the caller's to check). Records its use.
    #[tracing::instrument(name = "api_keys.authenticate", skip_all)]
    pub async fn authenticate(&self, key: &str) -> Result<Option<Uuid>, CredentialError> {
        let Some((key_id, secret)) = parse(key.trim()) else {
            return Ok(None);
        };
        let Some(stored) = self.identity.key_secret(key_id).await? else {
            return Ok(None);
        };
        if !bool::from(stored.as_slice().ct_eq(&sha256(secret))) {
            return Ok(None);
        }
        if let Err(e) = self.identity.touch_key(key_id).await {
            tracing::warn!(%key_id, error = %e, "the key's last use was not recorded");
        }
        Ok(Some(key_id))
    }
}

/// Whether a key may be used now: created, not revoked, not expired.
pub fn usable(key: &ApiKey, now: DateTime<Utc>) -> Option<&KeyData> {
    match key {
        ApiKey::Present(k) if k.usable_at(now) => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_key_of_the_documented_shape_parses() {
        let id = Uuid::new_v4();
        let secret = "ab".repeat(SECRET_BYTES);
        let key = format!("{KEY_PREFIX}{}_{secret}", id.simple());
        assert_eq!(parse(&key), Some((id, secret.as_str())));
        for bad in [
            String::new(),
            format!("xyz_{}_{secret}", id.simple()),
            format!("{KEY_PREFIX}{}_{}", id.simple(), &secret[1..]),
            format!("{KEY_PREFIX}{}_{}zz", id.simple(), &secret[2..]),
            format!("{KEY_PREFIX}{id}_{secret}"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_created_key_never_shows_in_debug_output() {
        let shown = format!(
            "{:?}",
            CreatedKey {
                key: "atk_secret".into(),
                written: Written {
                    previous: ApiKey::Absent,
                    state: ApiKey::Absent,
                    revision: None,
                    position: None,
                },
            }
        );
        assert!(!shown.contains("atk_secret"));
    }
}

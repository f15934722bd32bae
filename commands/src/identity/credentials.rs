//! The credentials store: what identity keeps beside the log because it is secret or a
//! lookup by secret: logins (username, argon2id password hash, default organization),
//! invitation tokens, API keys' hashes, and the JWT secret. The bootstrap superadmin's login is
//! created here ([`CredentialStore::bootstrap`]) and recorded in the log by
//! [`super::bootstrap::record_bootstrap`].
//!
//! Secret material stays in the `credentials` and `settings` tables: password hashes and the
//! JWT secret never reach logs or event data (this module's `Debug` output redacts them).

use argon2::password_hash::Error as HashError;
use atelier_domain::identity::user::Username;
use chrono::{DateTime, Utc};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngExt;
use sqlx::PgPool;
use uuid::Uuid;

/// The shortest JWT secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The length of a generated bootstrap password.
pub const GENERATED_PASSWORD_LEN: usize = 24;

/// How many random bytes a generated JWT secret has (stored hex-encoded).
const GENERATED_SECRET_BYTES: usize = 48;

/// The advisory lock that serialises concurrent bootstraps (any constant unique to this use).
const BOOTSTRAP_LOCK: i64 = 0x4154_454c_4944_0001;

/// An argon2id hash (of a password nobody has, with the default parameters) that unknown
/// usernames are verified against, so that they take as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$X60MxlQ5SMuih8ufWhCBzg$CHtRf0APcV20rl8MbKWnI+8gGwerEbxQW1KWc4dXhV4";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A configured (or stored) JWT secret is too short.
    #[error("the JWT secret (ATELIER_JWT_SECRET) must be at least {MIN_SECRET_LEN} bytes long")]
    WeakSecret,
    /// No JWT secret is configured in production.
    #[error(
        "ATELIER_JWT_SECRET is required in production: set it to a random secret of at least \
         {MIN_SECRET_LEN} bytes (for instance the output of `openssl rand -hex 32`)"
    )]
    MissingSecret,
    /// Hashing or verifying a password failed (never a wrong password: that is `Ok(None)`).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The event store failed.
    #[error("event store error: {0}")]
    Store(#[from] atelier_store::StoreError),
    /// The bootstrap was asked for something it cannot do.
    #[error("invalid bootstrap: {0}")]
    Invalid(String),
}

/// What [`CredentialStore::bootstrap`] did.
#[derive(Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The `default` organization.
    pub org_id: Uuid,
    /// The superadmin's id (the existing one's when it was already there).
    pub admin_user_id: Uuid,
    /// The superadmin's username (the existing one's when it was already there).
    pub admin_username: String,
    /// The password generated for a new superadmin when none was configured: print it once.
    pub generated_password: Option<String>,
    /// Whether this call created the superadmin.
    pub created: bool,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("org_id", &self.org_id)
            .field("admin_user_id", &self.admin_user_id)
            .field("admin_username", &self.admin_username)
            .field(
                "generated_password",
                &self.generated_password.as_ref().map(|_| "<redacted>"),
            )
            .field("created", &self.created)
            .finish()
    }
}

/// A stored login, found by name: who it is and their password's hash (never shown).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// Who.
    pub record: UserRecord,
    hash: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("record", &self.record)
            .field("hash", &"<redacted>")
            .finish()
    }
}

/// Someone who may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Their id.
    pub user_id: Uuid,
    /// Their username, as stored.
    pub username: String,
    /// Their default organization, where their sessions act unless they name one (`None`:
    /// none set; they act in their only organization, or choose).
    pub default_org: Option<Uuid>,
    /// Whether they administer the whole platform.
    pub is_superadmin: bool,
}

/// Credentials and settings, over PostgreSQL.
#[derive(Clone)]
pub struct CredentialStore {
    pool: PgPool,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore").finish_non_exhaustive()
    }
}

impl CredentialStore {
    /// The credentials store of this (migrated) database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the `default` organization and the superadmin on the first call; later calls
    /// change nothing (an existing superadmin's password is never touched) and report the
    /// existing superadmin. Concurrent calls (several servers starting at once) create one.
    #[tracing::instrument(name = "identity.bootstrap", skip_all)]
    pub async fn bootstrap(
        &self,
        username: &str,
        password: Option<&str>,
    ) -> Result<Bootstrap, CredentialError> {
        let username = username.trim();
        if username.is_empty() {
            return Err(CredentialError::Invalid(
                "the admin username must not be empty".to_owned(),
            ));
        }
        Username::parse(username).map_err(|e| {
            CredentialError::Invalid(format!(
                "the admin username {e} (3 to 50 letters, digits, `_`, `.` or `-`)"
            ))
        })?;
        if password.is_some_and(str::is_empty) {
            return Err(CredentialError::Invalid(
                "the admin password must not be empty (leave it unset to generate one)".to_owned(),
            ));
        }

        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK)
            .execute(&mut *tx)
            .await?;

        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('default_org_id', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(Uuid::now_v7().to_string())
        .execute(&mut *tx)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'default_org_id'")
                .fetch_one(&mut *tx)
                .await?;
        let org_id = Uuid::parse_str(&stored).map_err(|_| {
            CredentialError::Invalid("settings.default_org_id is not a UUID".to_owned())
        })?;

        let existing: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT user_id, username FROM credentials WHERE is_superadmin \
             ORDER BY created_at, user_id LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((admin_user_id, admin_username)) = existing {
            tx.commit().await?;
            return Ok(Bootstrap {
                org_id,
                admin_user_id,
                admin_username,
                generated_password: None,
                created: false,
            });
        }

        let generated_password = match password {
            Some(_) => None,
            None => Some(generate_password()),
        };
        let chosen = password
            .or(generated_password.as_deref())
            .unwrap_or_default()
            .to_owned();
        let hash = hash_password(chosen).await?;
        let admin_user_id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO credentials (user_id, username, password_hash, org_id, is_superadmin) \
             VALUES ($1, $2, $3, $4, true) ON CONFLICT ((lower(username))) DO NOTHING",
        )
        .bind(admin_user_id)
        .bind(username)
        .bind(hash)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(CredentialError::Invalid(format!(
                "a user named {username:?} exists and is not a superadmin"
            )));
        }
        tx.commit().await?;
        tracing::info!(%org_id, "bootstrap superadmin created");
        Ok(Bootstrap {
            org_id,
            admin_user_id,
            admin_username: username.to_owned(),
            generated_password,
            created: true,
        })
    }

    /// The login this username or email address (compared case-insensitively) names, if any:
    /// who a login attempt counts against, whatever name it used, before its password is
    /// checked with [`CredentialStore::verify`].
    #[tracing::instrument(name = "identity.find_login", skip_all)]
    pub async fn find_login(&self, username: &str) -> Result<Option<Login>, CredentialError> {
        let row: Option<(Uuid, String, String, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT user_id, username, password_hash, org_id, is_superadmin \
             FROM credentials WHERE lower(username) = lower($1) \
             UNION ALL \
             SELECT user_id, username, password_hash, org_id, is_superadmin \
             FROM credentials WHERE lower(email) = lower($1) AND lower(username) <> lower($1) \
             LIMIT 1",
        )
        .bind(username.trim())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(user_id, username, hash, default_org, is_superadmin)| Login {
                record: UserRecord {
                    user_id,
                    username,
                    default_org,
                    is_superadmin,
                },
                hash,
            },
        ))
    }

    /// The user of this login if `password` is theirs, or `None`. No login (an unknown name)
    /// costs the same password verification as a wrong password.
    #[tracing::instrument(name = "identity.verify", skip_all)]
    pub async fn verify(
        &self,
        login: Option<Login>,
        password: &str,
    ) -> Result<Option<UserRecord>, CredentialError> {
        let (hash, user) = match login {
            Some(Login { record, hash }) => (hash, Some(record)),
            None => (DUMMY_HASH.to_owned(), None),
        };
        let password = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), hash.as_str())
        })
        .await
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
        match (verified, user) {
            (Ok(()), Some(user)) => Ok(Some(user)),
            (Ok(()), None) | (Err(HashError::PasswordInvalid), _) => Ok(None),
            (Err(_), None) => Ok(None),
            (Err(e), Some(user)) => Err(CredentialError::Hash(format!(
                "the stored hash of user {} cannot be verified: {e}",
                user.user_id
            ))),
        }
    }

    /// The user with this username or email address and password, or `None`
    /// ([`CredentialStore::find_login`], then [`CredentialStore::verify`]).
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserRecord>, CredentialError> {
        let login = self.find_login(username).await?;
        self.verify(login, password).await
    }

    /// Replaces a user's password if `current` is theirs: `Ok(false)` when it is not (nothing
    /// changes). The new password is hashed here and never kept.
    #[tracing::instrument(name = "identity.change_password", skip_all, fields(%user_id))]
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
    ) -> Result<bool, CredentialError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(stored) = stored else {
            return Ok(false);
        };
        let current = current.to_owned();
        let verified = tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(current.as_bytes(), stored.as_str())
        })
        .await
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
        match verified {
            Ok(()) => {}
            Err(HashError::PasswordInvalid) => return Ok(false),
            Err(e) => return Err(CredentialError::Hash(e.to_string())),
        }
        let hash = hash_password(new.to_owned()).await?;
        sqlx::query("UPDATE credentials SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Stores the login of a registered user: their password's argon2id hash, their default
    /// organization and whether they are a superadmin. The password is hashed here and never
    /// kept. A username already stored is [`CredentialError::Invalid`].
    #[tracing::instrument(name = "identity.add_credentials", skip_all, fields(%user_id))]
    pub async fn add_credentials(
        &self,
        user_id: Uuid,
        username: &str,
        email: &str,
        password: &str,
        org_id: Option<Uuid>,
        is_superadmin: bool,
    ) -> Result<(), CredentialError> {
        let hash = hash_password(password.to_owned()).await?;
        let inserted = sqlx::query(
            "INSERT INTO credentials \
             (user_id, username, email, password_hash, org_id, is_superadmin) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(username)
        .bind(email)
        .bind(hash)
        .bind(org_id)
        .bind(is_superadmin)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(CredentialError::Invalid(format!(
                "a login named {username:?} exists already"
            )));
        }
        Ok(())
    }

    /// Sets (or clears) the organization a user's sessions act in unless they name one.
    pub async fn set_default_org(
        &self,
        user_id: Uuid,
        org_id: Option<Uuid>,
    ) -> Result<(), CredentialError> {
        sqlx::query("UPDATE credentials SET org_id = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes `org_id` the default organization of a user (or of their pending invitation) who
    /// has none.
    pub async fn adopt_default_org(
        &self,
        user_id: Uuid,
        org_id: Uuid,
    ) -> Result<(), CredentialError> {
        let mut tx = self.pool.begin().await?;
        for table in ["credentials", "invitations"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET org_id = $2 WHERE user_id = $1 AND org_id IS NULL"
            )))
            .bind(user_id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lets a login without an email address (the bootstrap superadmin's) log in with this one.
    pub async fn set_login_email(&self, user_id: Uuid, email: &str) -> Result<(), CredentialError> {
        sqlx::query("UPDATE credentials SET email = $2 WHERE user_id = $1 AND email IS NULL")
            .bind(user_id)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the email address a user logs in with.
    pub async fn set_email(&self, user_id: Uuid, email: &str) -> Result<(), CredentialError> {
        sqlx::query("UPDATE credentials SET email = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores an invitation: the SHA-256 hash of its token, for a user (of an organization, if
    /// they were created in one).
    pub async fn store_invitation(
        &self,
        user_id: Uuid,
        org_id: Option<Uuid>,
        token_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), CredentialError> {
        sqlx::query(
            "INSERT INTO invitations (token_hash, user_id, org_id, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(org_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses up the invitation with this token hash: its user and organization, if it exists and
    /// has not expired (an expired one is deleted all the same).
    pub async fn take_invitation(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(Uuid, Option<Uuid>)>, CredentialError> {
        let row: Option<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(
            "DELETE FROM invitations WHERE token_hash = $1 \
             RETURNING user_id, org_id, expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(user, org, current)| current.then_some((user, org))))
    }

    /// Stores the SHA-256 hash of an API key's secret.
    pub async fn store_key_secret(&self, key_id: Uuid, hash: &[u8]) -> Result<(), CredentialError> {
        sqlx::query("INSERT INTO api_key_secrets (key_id, secret_hash) VALUES ($1, $2)")
            .bind(key_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets an API key's secret (a key whose creation failed).
    pub async fn delete_key_secret(&self, key_id: Uuid) -> Result<(), CredentialError> {
        sqlx::query("DELETE FROM api_key_secrets WHERE key_id = $1")
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The SHA-256 hash of an API key's secret, if the key has one.
    pub async fn key_secret(&self, key_id: Uuid) -> Result<Option<Vec<u8>>, CredentialError> {
        Ok(
            sqlx::query_scalar("SELECT secret_hash FROM api_key_secrets WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that a key was used now, at most once a minute per key.
    pub async fn touch_key(&self, key_id: Uuid) -> Result<(), CredentialError> {
        sqlx::query(
            "UPDATE api_key_secrets SET last_used_at = now() WHERE key_id = $1 \
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The HS256 secret: the configured one (at least [`MIN_SECRET_LEN`] bytes, in every mode);
    /// without one, an error in production, and in development the one persisted in the
    /// database, generated by the first server that needed it (concurrent starts agree).
    pub async fn jwt_secret(
        &self,
        configured: Option<&str>,
        production: bool,
    ) -> Result<Vec<u8>, CredentialError> {
        if let Some(secret) = configured {
            if secret.len() < MIN_SECRET_LEN {
                return Err(CredentialError::WeakSecret);
            }
            return Ok(secret.as_bytes().to_vec());
        }
        if production {
            return Err(CredentialError::MissingSecret);
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(generate_secret())
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'jwt_secret'")
                .fetch_one(&self.pool)
                .await?;
        if stored.len() < MIN_SECRET_LEN {
            return Err(CredentialError::WeakSecret);
        }
        Ok(stored.into_bytes())
    }
}

/// An argon2id hash (PHC string) of `password`, computed on a blocking thread.
async fn hash_password(password: String) -> Result<String, CredentialError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| CredentialError::Hash(e.to_string()))?
    .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// 24 random alphanumeric characters.
fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(GENERATED_PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// 48 random bytes, hex-encoded.
fn generate_secret() -> String {
    super::secrets::random_hex(GENERATED_SECRET_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::phc::PasswordHash;
    use atelier_store::testing::TestDatabase;

    async fn identity() -> anyhow::Result<(TestDatabase, CredentialStore)> {
        let db = TestDatabase::create().await?;
        let pool = db.pool(8).await?;
        Ok((db, CredentialStore::new(pool)))
    }

    #[test]
    fn the_dummy_hash_uses_the_default_parameters_of_real_hashes() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a PHC string");
        let real = Argon2::default().hash_password(b"x").expect("hashed");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
    }

    #[test]
    fn generated_passwords_are_24_alphanumeric_characters_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn generated_secrets_are_96_hex_digits() {
        let s = generate_secret();
        assert_eq!(s.len(), 2 * GENERATED_SECRET_BYTES);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(s, generate_secret());
    }

    #[tokio::test]
    async fn a_superadmin_name_outside_the_username_rules_is_refused_before_anything_is_written()
    -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        for bad in ["x", "two words", &"a".repeat(51)] {
            let e = identity
                .bootstrap(bad, Some("correct horse"))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("username"), "{e}");
        }
        let b = identity.bootstrap("admin", Some("correct horse")).await?;
        assert!(b.created, "nothing was created by the refused attempts");
        Ok(())
    }

    #[test]
    fn a_bootstrap_never_shows_its_generated_password_in_debug_output() {
        let b = Bootstrap {
            org_id: Uuid::nil(),
            admin_user_id: Uuid::nil(),
            admin_username: "admin".to_owned(),
            generated_password: Some("s3cr3t-passw0rd".to_owned()),
            created: true,
        };
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[tokio::test]
    async fn the_first_bootstrap_creates_a_superadmin_who_can_authenticate() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let b = identity.bootstrap("Admin", Some("correct horse")).await?;
        assert!(b.created);
        assert_eq!(b.admin_username, "Admin");
        assert_eq!(b.generated_password, None);
        let user = identity
            .authenticate("admin", "correct horse")
            .await?
            .expect("authenticated, case-insensitively");
        assert_eq!(user.username, "Admin");
        assert_eq!(user.default_org, Some(b.org_id));
        assert!(user.is_superadmin);
        let stored: String = sqlx::query_scalar("SELECT password_hash FROM credentials")
            .fetch_one(&identity.pool)
            .await?;
        assert!(stored.starts_with("$argon2id$"), "an argon2id hash");
        Ok(())
    }

    #[tokio::test]
    async fn a_later_bootstrap_changes_nothing_and_generates_nothing() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let first = identity.bootstrap("admin", None).await?;
        let generated = first.generated_password.clone().expect("generated");
        let second = identity.bootstrap("other", Some("new password")).await?;
        assert!(!second.created);
        assert_eq!(second.generated_password, None);
        assert_eq!(second.admin_username, "admin");
        assert_eq!(second.org_id, first.org_id);
        assert!(identity.authenticate("admin", &generated).await?.is_some());
        assert!(
            identity
                .authenticate("admin", "new password")
                .await?
                .is_none()
        );
        assert!(
            identity
                .authenticate("other", "new password")
                .await?
                .is_none()
        );
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_bootstraps_create_one_superadmin() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let runs = (0..4).map(|i| {
            let identity = identity.clone();
            tokio::spawn(async move { identity.bootstrap(&format!("admin{i}"), None).await })
        });
        let results = futures_join(runs).await?;
        assert_eq!(results.iter().filter(|b| b.created).count(), 1);
        let orgs: std::collections::HashSet<_> = results.iter().map(|b| b.org_id).collect();
        assert_eq!(orgs.len(), 1);
        let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
            .fetch_one(&identity.pool)
            .await?;
        assert_eq!(admins, 1);
        Ok(())
    }

    async fn futures_join(
        runs: impl Iterator<Item = tokio::task::JoinHandle<Result<Bootstrap, CredentialError>>>,
    ) -> anyhow::Result<Vec<Bootstrap>> {
        let mut out = Vec::new();
        for run in runs.collect::<Vec<_>>() {
            out.push(run.await??);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_like_an_unknown_user() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        identity.bootstrap("admin", Some("right")).await?;
        assert_eq!(identity.authenticate("admin", "wrong").await?, None);
        assert_eq!(identity.authenticate("nobody", "right").await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_admin_username_or_password_is_refused() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        assert!(matches!(
            identity.bootstrap("  ", None).await,
            Err(CredentialError::Invalid(_))
        ));
        assert!(matches!(
            identity.bootstrap("admin", Some("")).await,
            Err(CredentialError::Invalid(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_configured_secret_must_have_32_bytes_in_every_mode() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let long = "x".repeat(32);
        for production in [false, true] {
            assert!(matches!(
                identity.jwt_secret(Some("short"), production).await,
                Err(CredentialError::WeakSecret)
            ));
            assert_eq!(
                identity.jwt_secret(Some(&long), production).await?,
                long.as_bytes()
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn production_refuses_to_run_without_a_secret() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let err = identity.jwt_secret(None, true).await.unwrap_err();
        assert!(matches!(err, CredentialError::MissingSecret));
        assert!(err.to_string().contains("ATELIER_JWT_SECRET"));
        Ok(())
    }

    #[tokio::test]
    async fn development_generates_a_secret_once_and_keeps_it() -> anyhow::Result<()> {
        let (_db, identity) = identity().await?;
        let (a, b) = tokio::join!(
            identity.jwt_secret(None, false),
            identity.jwt_secret(None, false)
        );
        let (a, b) = (a?, b?);
        assert!(a.len() >= MIN_SECRET_LEN);
        assert_eq!(a, b);
        assert_eq!(identity.jwt_secret(None, false).await?, a);
        Ok(())
    }
}

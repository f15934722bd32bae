//! Identity's endpoints: logins and sessions ([`login`]), the caller's account ([`account`]),
//! organizations and members ([`organizations`]), users ([`users`]), API keys ([`api_keys`]);
//! and the authentication every protected endpoint goes through ([`auth`]), with its login
//! throttle ([`throttle`]).

pub mod account;
pub mod api_keys;
pub mod auth;
pub mod login;
pub mod organizations;
pub mod throttle;
pub mod users;

use actix_web::web;
use atelier_commands::identity::CredentialStore;
use atelier_commands::identity::bootstrap::record_bootstrap;
use atelier_commands::identity::credentials::Bootstrap;
use atelier_domain::identity::Permission;
use atelier_domain::identity::api_key::{ApiKey, KeyEvent};
use atelier_domain::identity::organization::{OrgEvent, Organization};
use atelier_domain::identity::session::{Session, SessionEvent};
use atelier_domain::identity::user::{User, UserEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::{EventStore, RecordedEvent};
use chrono::Utc;
use sqlx::PgPool;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::contexts::{Context, LiveCategory, no_workers};
use crate::live::hub::Revoked;
use crate::server::{ServerConfig, StartError};

/// Identity, as the HTTP layer serves it. Sessions and API keys are private on the live feed:
/// who logged in when and which keys exist are no business of an organization's viewers.
pub const CONTEXT: Context = Context {
    name: "identity",
    routes: configure,
    openapi: Doc::openapi,
    live: &[
        LiveCategory {
            category: Organization::CATEGORY,
            resource: "organization",
        },
        LiveCategory {
            category: User::CATEGORY,
            resource: "user",
        },
    ],
    workers: no_workers,
    revokes,
    org_figures: crate::contexts::no_org_figures,
    live_message: crate::contexts::plain_messages,
    live_commands: &[],
    live_alias: crate::contexts::no_aliases,
    resources: &[
        crate::audit::history::resource::<Organization>(
            "organizations",
            "organization",
            crate::audit::history::Access::Organization,
        ),
        crate::audit::history::resource::<User>(
            "users",
            "user",
            crate::audit::history::Access::User,
        ),
        crate::audit::history::resource::<ApiKey>(
            "api-keys",
            "API key",
            crate::audit::history::Access::Tenant(Permission::Manage),
        ),
    ],
};

/// What an identity event withdraws from live clients (a session ended, a key revoked, a user
/// deactivated or their password or rights changed, an organization's members or activity
/// changed), read as the aggregates' own event types.
fn revokes(record: &RecordedEvent) -> Option<Revoked> {
    let (category, id) = record.stream.as_str().split_once('-')?;
    let id = Uuid::try_parse(id).ok()?;
    let (ty, meta, data) = (record.event_type.as_str(), &record.metadata, &record.data);
    if category == Session::CATEGORY {
        matches!(
            SessionEvent::decode_stored(ty, meta, data),
            Ok(SessionEvent::SessionEnded { .. })
        )
        .then_some(Revoked::Session(id))
    } else if category == ApiKey::CATEGORY {
        matches!(
            KeyEvent::decode_stored(ty, meta, data),
            Ok(KeyEvent::ApiKeyRevoked { .. })
        )
        .then_some(Revoked::Key(id))
    } else if category == User::CATEGORY {
        matches!(
            UserEvent::decode_stored(ty, meta, data),
            Ok(UserEvent::UserDeactivated { .. }
                | UserEvent::PasswordChanged { .. }
                | UserEvent::SuperadminChanged { .. })
        )
        .then_some(Revoked::User(id))
    } else if category == Organization::CATEGORY {
        matches!(
            OrgEvent::decode_stored(ty, meta, data),
            Ok(OrgEvent::MemberRemoved { .. }
                | OrgEvent::MemberRoleChanged { .. }
                | OrgEvent::OrganizationDeactivated { .. }
                | OrgEvent::OrganizationDeleted { .. })
        )
        .then_some(Revoked::Organization(id))
    } else {
        None
    }
}

/// Identity's operations.
#[derive(OpenApi)]
#[openapi(
    paths(
        login::login,
        login::login_key,
        login::refresh,
        login::logout,
        account::me,
        account::verify,
        account::change_password,
        account::accept_invitation,
        organizations::list,
        organizations::create,
        organizations::get,
        organizations::update,
        organizations::delete,
        organizations::members,
        organizations::deactivate,
        organizations::reactivate,
        organizations::set_member,
        organizations::remove_member,
        users::list_users,
        users::get_user,
        users::update_user,
        users::deactivate_user,
        users::create_user,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
    ),
    tags(
        (name = "auth", description = "Logins (password or API key), refresh-token rotation, logout, the caller's account, invitations"),
        (name = "identity", description = "Organizations, members and roles, users, API keys. A user of several organizations picks one with `X-Organization-Id`; another organization's resources are 404s"),
    )
)]
pub struct Doc;

/// Registers identity's routes (inside `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(login::configure)
        .configure(account::configure)
        .configure(organizations::configure)
        .configure(users::configure)
        .configure(api_keys::configure);
}

/// What a server does for identity before it serves: reads (or, outside production, makes)
/// the JWT secret, and bootstraps the superadmin, in the credentials store and in the log.
/// Returns the secret and what the bootstrap did.
pub async fn first_start(
    pool: &PgPool,
    store: &dyn EventStore,
    config: &ServerConfig,
) -> Result<(Vec<u8>, Bootstrap), StartError> {
    let credentials = CredentialStore::new(pool.clone());
    let secret = credentials
        .jwt_secret(config.jwt_secret.as_deref(), config.production)
        .await?;
    let bootstrap = credentials
        .bootstrap(&config.admin_username, config.admin_password.as_deref())
        .await?;
    record_bootstrap(store, &bootstrap, &config.admin_email, Utc::now()).await?;
    credentials
        .set_login_email(bootstrap.admin_user_id, &config.admin_email)
        .await?;
    Ok((secret, bootstrap))
}

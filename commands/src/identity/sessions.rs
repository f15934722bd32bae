//! Login sessions: a login starts one, each refresh rotates its refresh token, a logout (or a
//! spent refresh token presented again) ends it. The tokens themselves are signed by the HTTP
//! layer and carry the session's id and generation; nothing secret is written here.

use atelier_domain::identity::session::{
    EndReason, Session, SessionCommand, SessionData, SessionError,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Store, Written, execute, stream_of};

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The session moved to the next generation: issue its tokens.
    Rotated(SessionData),
    /// The token was already spent: the session has ended, every token of it is void.
    Reused,
}

/// Starts, refreshes and ends sessions.
#[derive(Clone)]
pub struct SessionService {
    store: Store,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl SessionService {
    /// A service writing to this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Starts a session for a user acting in an organization, refreshable until `expires_at`.
    #[tracing::instrument(name = "sessions.start", skip_all, fields(%user_id))]
    pub async fn start(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<SessionData, CommandError<SessionError>> {
        let session_id = Uuid::now_v7();
        let written = execute::<Session>(
            self.store.as_ref(),
            &stream_of::<Session>(session_id),
            ctx,
            None,
            SessionCommand::Start {
                session_id,
                user_id,
                org_id: ctx.org_id,
                at: ctx.occurred_at,
                expires_at,
            },
        )
        .await?;
        active(written)
    }

    /// Exchanges the refresh token of `generation` for the next one. A spent generation ends
    /// the session ([`Refreshed::Reused`]).
    #[tracing::instrument(name = "sessions.refresh", skip_all, fields(%session_id))]
    pub async fn refresh(
        &self,
        ctx: &CommandContext,
        session_id: Uuid,
        generation: u32,
    ) -> Result<Refreshed, CommandError<SessionError>> {
        let written = execute::<Session>(
            self.store.as_ref(),
            &stream_of::<Session>(session_id),
            ctx,
            None,
            SessionCommand::Refresh {
                generation,
                at: ctx.occurred_at,
            },
        )
        .await?;
        match written.state {
            Session::Ended(EndReason::RefreshTokenReused) if written.position.is_some() => {
                tracing::warn!(%session_id, "a spent refresh token was used again; session ended");
                Ok(Refreshed::Reused)
            }
            _ => active(written).map(Refreshed::Rotated),
        }
    }

    /// Ends a session (again is fine).
    #[tracing::instrument(name = "sessions.end", skip_all, fields(%session_id))]
    pub async fn end(
        &self,
        ctx: &CommandContext,
        session_id: Uuid,
        reason: EndReason,
    ) -> Result<(), CommandError<SessionError>> {
        execute::<Session>(
            self.store.as_ref(),
            &stream_of::<Session>(session_id),
            ctx,
            None,
            SessionCommand::End {
                reason,
                at: ctx.occurred_at,
            },
        )
        .await?;
        Ok(())
    }
}

fn active(written: Written<Session>) -> Result<SessionData, CommandError<SessionError>> {
    match written.state {
        Session::Active(s) => Ok(s),
        _ => Err(CommandError::Rejected(SessionError::Ended)),
    }
}

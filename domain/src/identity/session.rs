//! A login session: started by a login, kept alive by refresh-token rotation, ended by logout.
//!
//! Each refresh token carries the session's generation; a refresh with the current generation
//! moves the session to the next one (the old token is spent). A refresh with an older
//! generation means a spent token was used again — stolen, or replayed — so the whole session
//! ends, and every token of it stops working (RFC 6819 §5.2.2.3, OAuth 2.1 refresh rotation).
//! Token hashes are not here; the session's stream holds only generations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, DomainEvent};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The user logged out.
    Logout,
    /// A spent refresh token was presented again.
    RefreshTokenReused,
    /// The user's password changed.
    PasswordChanged,
    /// The user was deactivated.
    UserDeactivated,
}

/// A session in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    /// Its id.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// The organization it acts in.
    pub org_id: Uuid,
    /// The generation of the one refresh token that may be used next.
    pub generation: u32,
    /// When it can no longer be refreshed, whatever happens.
    pub expires_at: DateTime<Utc>,
}

/// The session aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Session {
    /// Never started.
    #[default]
    Absent,
    /// Started and not ended.
    Active(SessionData),
    /// Ended.
    Ended(EndReason),
}

/// What can be asked of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Start it (a login).
    Start {
        /// Its id.
        session_id: Uuid,
        /// Whose.
        user_id: Uuid,
        /// The organization.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
        /// When it must end at the latest.
        expires_at: DateTime<Utc>,
    },
    /// Exchange the refresh token of this generation for the next.
    Refresh {
        /// The generation the presented token carries.
        generation: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// End it.
    End {
        /// Why.
        reason: EndReason,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    /// A session started.
    SessionStarted {
        /// Its id.
        session_id: Uuid,
        /// Whose.
        user_id: Uuid,
        /// The organization.
        org_id: Uuid,
        /// When.
        started_at: DateTime<Utc>,
        /// When it ends at the latest.
        expires_at: DateTime<Utc>,
    },
    /// Its refresh token was rotated.
    SessionRefreshed {
        /// Its id.
        session_id: Uuid,
        /// The generation now valid.
        generation: u32,
        /// When.
        at: DateTime<Utc>,
    },
    /// It ended.
    SessionEnded {
        /// Its id.
        session_id: Uuid,
        /// Why.
        reason: EndReason,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SessionEvent {}

/// Why a session command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A session with this id exists.
    #[error("the session already exists")]
    AlreadyExists,
    /// No such session.
    #[error("the session does not exist")]
    NotFound,
    /// It ended.
    #[error("the session has ended")]
    Ended,
    /// It is past its lifetime.
    #[error("the session has expired")]
    Expired,
    /// The token's generation was never issued.
    #[error("the refresh token is not valid")]
    UnknownGeneration,
}

impl Aggregate for Session {
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    const CATEGORY: &'static str = "session";

    fn decide(&self, command: SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        match (self, command) {
            (
                Session::Absent,
                SessionCommand::Start {
                    session_id,
                    user_id,
                    org_id,
                    at,
                    expires_at,
                },
            ) => Ok(vec![SessionEvent::SessionStarted {
                session_id,
                user_id,
                org_id,
                started_at: at,
                expires_at,
            }]),
            (_, SessionCommand::Start { .. }) => Err(SessionError::AlreadyExists),
            (Session::Absent, _) => Err(SessionError::NotFound),
            (Session::Ended(_), SessionCommand::End { .. }) => Ok(vec![]),
            (Session::Ended(_), _) => Err(SessionError::Ended),
            (Session::Active(s), SessionCommand::End { reason, at }) => {
                Ok(vec![SessionEvent::SessionEnded {
                    session_id: s.id,
                    reason,
                    at,
                }])
            }
            (Session::Active(s), SessionCommand::Refresh { generation, at }) => {
                if generation > s.generation {
                    return Err(SessionError::UnknownGeneration);
                }
                if generation < s.generation {
                    // A spent token: whoever holds the current one may be the thief.
                    return Ok(vec![SessionEvent::SessionEnded {
                        session_id: s.id,
                        reason: EndReason::RefreshTokenReused,
                        at,
                    }]);
                }
                if at >= s.expires_at {
                    return Err(SessionError::Expired);
                }
                Ok(vec![SessionEvent::SessionRefreshed {
                    session_id: s.id,
                    generation: s.generation + 1,
                    at,
                }])
            }
        }
    }

    fn evolve(self, event: &SessionEvent) -> Self {
        match (self, event) {
            (
                _,
                SessionEvent::SessionStarted {
                    session_id,
                    user_id,
                    org_id,
                    expires_at,
                    ..
                },
            ) => Session::Active(SessionData {
                id: *session_id,
                user_id: *user_id,
                org_id: *org_id,
                generation: 0,
                expires_at: *expires_at,
            }),
            (Session::Active(mut s), SessionEvent::SessionRefreshed { generation, .. }) => {
                s.generation = *generation;
                Session::Active(s)
            }
            (_, SessionEvent::SessionEnded { reason, .. }) => Session::Ended(*reason),
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn sid() -> Uuid {
        Uuid::from_u128(40)
    }
    fn started() -> SessionEvent {
        SessionEvent::SessionStarted {
            session_id: sid(),
            user_id: Uuid::from_u128(10),
            org_id: Uuid::from_u128(1),
            started_at: t(0),
            expires_at: t(1000),
        }
    }
    fn refreshed(generation: u32) -> SessionEvent {
        SessionEvent::SessionRefreshed {
            session_id: sid(),
            generation,
            at: t(generation as i64),
        }
    }

    #[test]
    fn a_refresh_with_the_current_token_rotates_it() {
        given::<Session>([started()])
            .when(SessionCommand::Refresh {
                generation: 0,
                at: t(1),
            })
            .then([refreshed(1)]);
        given::<Session>([started(), refreshed(1)])
            .when(SessionCommand::Refresh {
                generation: 1,
                at: t(2),
            })
            .then([refreshed(2)]);
    }

    #[test]
    fn a_reused_refresh_token_ends_the_whole_session() {
        let reused = SessionEvent::SessionEnded {
            session_id: sid(),
            reason: EndReason::RefreshTokenReused,
            at: t(5),
        };
        given::<Session>([started(), refreshed(1)])
            .when(SessionCommand::Refresh {
                generation: 0,
                at: t(5),
            })
            .then([reused.clone()]);
        // After that, even the newest token is refused.
        given::<Session>([started(), refreshed(1), reused])
            .when(SessionCommand::Refresh {
                generation: 1,
                at: t(6),
            })
            .then_error(SessionError::Ended);
    }

    #[test]
    fn a_token_from_the_future_or_past_the_lifetime_is_refused() {
        given::<Session>([started()])
            .when(SessionCommand::Refresh {
                generation: 3,
                at: t(1),
            })
            .then_error(SessionError::UnknownGeneration);
        given::<Session>([started()])
            .when(SessionCommand::Refresh {
                generation: 0,
                at: t(1000),
            })
            .then_error(SessionError::Expired);
    }

    #[test]
    fn logout_ends_the_session_once() {
        let ended = SessionEvent::SessionEnded {
            session_id: sid(),
            reason: EndReason::Logout,
            at: t(3),
        };
        let logout = SessionCommand::End {
            reason: EndReason::Logout,
            at: t(3),
        };
        given::<Session>([started()])
            .when(logout.clone())
            .then([ended.clone()]);
        given::<Session>([started(), ended]).when(logout).then([]);
    }
}

//! Login throttling: every login attempt counts against the caller's IP address and against the
//! account it names, before the password is checked (so a guess past the limit teaches nothing).
//! Each is a GCRA limiter (governor): a burst, then one attempt per period. Over the limit, the
//! answer is 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::problem::ApiError;

/// How many login attempts are let through, and how fast they come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    /// Attempts allowed at once.
    pub burst: u32,
    /// One more attempt is allowed after each period.
    pub period: Duration,
}

/// What a password check counts against, besides the caller's address: the account it reaches,
/// whatever name reached it (username or email address, in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account<'a> {
    /// A user: every name and every check of their password (login, password change) counts
    /// here.
    User(uuid::Uuid),
    /// A name that reaches no account: counted by the name (trimmed, lowercased), so probing
    /// unknown names is throttled like guessing known ones.
    Unknown(&'a str),
    /// Logins with API keys (not guessable, counted together).
    ApiKeys,
}

impl Account<'_> {
    fn key(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Unknown(name) => format!("name:{}", name.trim().to_lowercase()),
            Self::ApiKeys => "api-keys".to_owned(),
        }
    }
}

/// Login limits per IP address and per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Per client IP address.
    pub per_ip: LoginLimit,
    /// Per account (see [`Account`]).
    pub per_account: LoginLimit,
}

impl Default for LoginLimits {
    /// 30 attempts per IP, then one every 2 s; 10 per account, then one every 30 s.
    fn default() -> Self {
        Self {
            per_ip: LoginLimit {
                burst: 30,
                period: Duration::from_secs(2),
            },
            per_account: LoginLimit {
                burst: 10,
                period: Duration::from_secs(30),
            },
        }
    }
}

/// Forget keys idle long enough to be full again once this many are tracked.
const PRUNE_ABOVE: usize = 10_000;

fn limiter(limit: LoginLimit) -> DefaultKeyedRateLimiter<String> {
    let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(limit.period.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::keyed(quota)
}

/// The login limiters of one server.
pub struct LoginThrottle {
    per_ip: DefaultKeyedRateLimiter<String>,
    per_account: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// Limiters with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            per_ip: limiter(limits.per_ip),
            per_account: limiter(limits.per_account),
        }
    }

    /// Counts an attempt from `ip` for `account`: a 429 when either is over its limit (an IP
    /// over its limit does not use up the account's attempts).
    pub fn attempt(&self, ip: &str, account: Account<'_>) -> Result<(), ApiError> {
        check(&self.per_ip, ip.to_owned(), "from this address")?;
        check(&self.per_account, account.key(), "for this account")
    }
}

fn check(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: String,
    what: &str,
) -> Result<(), ApiError> {
    if limiter.len() > PRUNE_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(&key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        metrics::counter!("atelier_login_throttled_total").increment(1);
        tracing::warn!(
            retry_after_ms = wait.as_millis() as u64,
            "login attempts throttled"
        );
        ApiError::rate_limited(
            format!("too many login attempts {what}; try again later"),
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ip: u32, account: u32) -> LoginLimits {
        let hour = Duration::from_secs(3600);
        LoginLimits {
            per_ip: LoginLimit {
                burst: ip,
                period: hour,
            },
            per_account: LoginLimit {
                burst: account,
                period: hour,
            },
        }
    }

    #[test]
    fn an_unknown_name_past_its_burst_is_refused_with_a_retry_delay_whatever_the_case() {
        let t = LoginThrottle::new(limits(100, 3));
        for _ in 0..3 {
            t.attempt("127.0.0.1", Account::Unknown("Alice")).unwrap();
        }
        let e = t
            .attempt("127.0.0.2", Account::Unknown(" alice"))
            .unwrap_err();
        assert_eq!(e.problem().status, 429);
        assert!(e.problem().retry_after.is_some_and(|s| s > 3500));
        t.attempt("127.0.0.1", Account::Unknown("bob")).unwrap();
    }

    #[test]
    fn a_user_is_one_budget_and_a_name_that_looks_like_their_id_is_another() {
        let t = LoginThrottle::new(limits(100, 2));
        let id = uuid::Uuid::now_v7();
        t.attempt("127.0.0.1", Account::User(id)).unwrap();
        t.attempt("127.0.0.2", Account::User(id)).unwrap();
        assert_eq!(
            t.attempt("127.0.0.3", Account::User(id))
                .unwrap_err()
                .problem()
                .status,
            429
        );
        t.attempt("127.0.0.1", Account::Unknown(&format!("user:{id}")))
            .unwrap();
    }

    #[test]
    fn an_address_past_its_burst_is_refused_for_every_account() {
        let t = LoginThrottle::new(limits(2, 100));
        t.attempt("127.0.0.1", Account::Unknown("a")).unwrap();
        t.attempt("127.0.0.1", Account::Unknown("b")).unwrap();
        assert_eq!(
            t.attempt("127.0.0.1", Account::Unknown("c"))
                .unwrap_err()
                .problem()
                .status,
            429
        );
        t.attempt("127.0.0.2", Account::Unknown("c")).unwrap();
    }
}

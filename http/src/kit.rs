//! What every context's handlers share beyond the conventions ([`crate::conventions`]), the
//! error shape ([`crate::problem`]) and pagination ([`crate::pagination`]): the caller as
//! identity authenticated them, the command context a request acts in, and ids from paths.
//! Contexts import these from here, never from one another.

use atelier_commands::handler::CommandContext;
use uuid::Uuid;

pub use crate::identity::auth::Principal;
use crate::problem::ApiError;

/// The context of the commands a request issues: the caller's organization and actor, and
/// the request's id.
pub fn command_context(principal: &Principal) -> CommandContext {
    let mut ctx = CommandContext::new(principal.org_id, principal.actor());
    if let Some(credential) = principal.credential() {
        ctx = ctx.with_credential(credential);
    }
    match crate::problem::current_request_id() {
        Some(id) => ctx.with_request_id(id),
        None => ctx,
    }
}

/// The id a path names: one that is not a UUID names no resource, a 404 like an unknown one
/// (`no such <what>`).
pub fn path_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no such {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_id_that_is_not_a_uuid_is_a_404_naming_the_resource() {
        let e = path_id("12", "project").unwrap_err();
        assert_eq!(e.0.status, 404);
        assert_eq!(e.0.detail.as_deref(), Some("no such project"));
        let id = Uuid::now_v7();
        assert_eq!(path_id(&id.to_string(), "project").unwrap(), id);
    }
}

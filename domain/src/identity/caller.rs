//! Who calls, and the rules that judge them before any aggregate does: what their role and an
//! API key's scopes allow in the organization they act in, which organization a user's login
//! acts in, whether a token is still theirs, and whom they may see. Pure: the HTTP layer
//! gathers the facts (the current state of the session or key, user and organization) and
//! renders the refusals.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::api_key::Scope;
use super::organization::Organization;
use super::user::UserData;
use super::{Actor, Permission, Role};

/// Why a caller is refused: a [`Refusal::Forbidden`] is a 403, a [`Refusal::NotFound`] a 404
/// (what they may not know exists), an [`Refusal::Unauthorized`] a 401 (the credential itself no
/// longer holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// They may not do it.
    #[error("{0}")]
    Forbidden(String),
    /// It does not exist, for them.
    #[error("{0}")]
    NotFound(&'static str),
    /// Their credential does not hold any more.
    #[error("{0}")]
    Unauthorized(&'static str),
}

/// The authenticated caller, as the rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user (for an API key: its creator).
    pub user_id: Uuid,
    /// The organization they act in (nil: none).
    pub org_id: Uuid,
    /// Whether they administer the whole platform (never through an API key).
    pub is_superadmin: bool,
    /// Their role in the organization now (`None`: not a member).
    pub role: Option<Role>,
    /// An API key's scopes (`None`: a person's token).
    pub scopes: Option<BTreeSet<Scope>>,
    /// The API key, for a key or a key login's token.
    pub key_id: Option<Uuid>,
}

impl Caller {
    /// Whether they may do this in their organization: a superadmin anything, a member what
    /// their role allows (viewers read, members create and change, admins manage, owners own),
    /// an API key what its scopes allow within its creator's role.
    pub fn require(&self, permission: Permission) -> Result<(), Refusal> {
        if let Some(scopes) = &self.scopes
            && !Scope::allow(scopes, permission)
        {
            return Err(Refusal::Forbidden(format!(
                "this API key's scopes ({}) do not allow it",
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.org_id.is_nil() {
            return Err(Refusal::Forbidden(
                "you act in no organization: you belong to none, or to several with no default; \
                 name one with the X-Organization-Id header"
                    .to_owned(),
            ));
        }
        if self.is_superadmin || self.role.is_some_and(|r| r.allows(permission)) {
            return Ok(());
        }
        Err(Refusal::Forbidden(match self.role {
            Some(role) => format!(
                "a {} of this organization may not do this ({} or more is needed)",
                role.as_str(),
                Role::needed_for(permission).as_str()
            ),
            None => "you are not a member of this organization".to_owned(),
        }))
    }

    /// The actor an organization's own rules judge when they act on `org_id` (which may not be
    /// the one they act in). An API key acts only in its organization (another is not found)
    /// and only within its scopes; its creator's role applies on top.
    pub fn acting_on(&self, org_id: Uuid, permission: Permission) -> Result<Actor, Refusal> {
        if self.key_id.is_some() {
            if self.org_id != org_id {
                return Err(Refusal::NotFound("no such organization"));
            }
            self.require(permission)?;
        }
        Ok(Actor {
            user_id: self.user_id,
            is_superadmin: self.is_superadmin,
        })
    }

    /// The one organization a list of organizations shows them, if only one: an API key sees
    /// its own (people see those they belong to, or all as superadmins).
    pub fn organizations_listed(&self) -> Option<Uuid> {
        self.key_id.map(|_| self.org_id)
    }

    /// Whose users a list shows them: a superadmin's filter (`requested`, or everyone), else
    /// their organization's members only.
    pub fn users_listed(&self, requested: Option<Uuid>) -> Option<Uuid> {
        if self.is_superadmin {
            requested
        } else {
            Some(self.org_id)
        }
    }

    /// The organization a user they create joins: the one they name, else theirs (a
    /// superadmin's new user joins none unless named).
    pub fn new_user_organization(&self, requested: Option<Uuid>) -> Option<Uuid> {
        match requested {
            Some(org) => Some(org),
            None if self.is_superadmin => None,
            None => Some(self.org_id),
        }
    }

    /// Whether they may see user `id`: themselves (as a person), anyone for a superadmin, a
    /// member of their organization for its admins (`is_member` is asked only then).
    pub fn sees_user(&self, id: Uuid) -> UserSight {
        if id == self.user_id && self.key_id.is_none() || self.is_superadmin {
            UserSight::Yes
        } else if self.require(Permission::Manage).is_ok() {
            UserSight::IfMemberOf(self.org_id)
        } else {
            UserSight::No
        }
    }
}

/// Whether a caller sees a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSight {
    /// Yes.
    Yes,
    /// If the user is a member of this organization.
    IfMemberOf(Uuid),
    /// No: to them, the user does not exist.
    No,
}

/// The user's role in an organization they act in. One that does not exist, or that they do
/// not belong to when they named it `explicitly`, is not found (a superadmin may act in any
/// existing one); a deactivated one is forbidden to all but superadmins.
pub fn role_in(
    org: &Organization,
    user_id: Uuid,
    is_superadmin: bool,
    explicitly: bool,
) -> Result<Option<Role>, Refusal> {
    let Organization::Present(data) = org else {
        return Err(Refusal::NotFound("no such organization"));
    };
    let role = org.role_of(user_id);
    if role.is_none() && explicitly && !is_superadmin {
        return Err(Refusal::NotFound("no such organization"));
    }
    if !data.is_active && !is_superadmin {
        return Err(Refusal::Forbidden(
            "the organization is deactivated".to_owned(),
        ));
    }
    Ok(role)
}

/// The user, if they exist and may log in (or go on using a session or key) now.
pub fn may_log_in(user: &super::user::User) -> Result<&UserData, Refusal> {
    match user.data() {
        Some(u) if u.is_active => Ok(u),
        Some(_) => Err(Refusal::Unauthorized("the account is deactivated")),
        None => Err(Refusal::Unauthorized("the account does not exist")),
    }
}

/// Whether a token issued after `password_changes` changes of the user's password still
/// holds: a new password ends every token issued before it.
pub fn password_unchanged_since(user: &UserData, password_changes: u32) -> Result<(), Refusal> {
    if user.password_changes == password_changes {
        Ok(())
    } else {
        Err(Refusal::Unauthorized(
            "the password has changed since this token was issued; log in again",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Option<Role>) -> Caller {
        Caller {
            user_id: Uuid::from_u128(1),
            org_id: Uuid::from_u128(10),
            is_superadmin: false,
            role,
            scopes: None,
            key_id: None,
        }
    }

    #[test]
    fn a_member_may_do_what_their_role_allows_and_a_key_what_its_scopes_allow_too() {
        assert!(
            caller(Some(Role::Member))
                .require(Permission::Write)
                .is_ok()
        );
        let viewer = caller(Some(Role::Viewer)).require(Permission::Write);
        assert!(matches!(viewer, Err(Refusal::Forbidden(m)) if m.contains("member or more")));
        let key = Caller {
            scopes: Some([Scope::Read].into()),
            key_id: Some(Uuid::from_u128(7)),
            ..caller(Some(Role::Owner))
        };
        assert!(key.require(Permission::Read).is_ok());
        assert!(matches!(
            key.require(Permission::Write),
            Err(Refusal::Forbidden(_))
        ));
        let nowhere = Caller {
            org_id: Uuid::nil(),
            ..caller(None)
        };
        assert!(
            matches!(nowhere.require(Permission::Read), Err(Refusal::Forbidden(m)) if m.contains("X-Organization-Id"))
        );
    }

    #[test]
    fn an_api_key_acts_on_no_other_organization_than_its_own() {
        let key = Caller {
            scopes: Some([Scope::Admin].into()),
            key_id: Some(Uuid::from_u128(7)),
            ..caller(Some(Role::Admin))
        };
        assert_eq!(
            key.acting_on(Uuid::from_u128(11), Permission::Read),
            Err(Refusal::NotFound("no such organization"))
        );
        assert!(key.acting_on(key.org_id, Permission::Manage).is_ok());
        assert_eq!(key.organizations_listed(), Some(key.org_id));
        assert_eq!(caller(None).organizations_listed(), None);
        // A person's token is judged by the organization's own rules instead.
        assert!(
            caller(None)
                .acting_on(Uuid::from_u128(11), Permission::Own)
                .is_ok()
        );
    }

    #[test]
    fn users_are_seen_by_themselves_by_superadmins_and_by_admins_of_an_organization_they_belong_to()
    {
        let me = caller(Some(Role::Viewer));
        assert_eq!(me.sees_user(me.user_id), UserSight::Yes);
        assert_eq!(me.sees_user(Uuid::from_u128(2)), UserSight::No);
        let admin = caller(Some(Role::Admin));
        assert_eq!(
            admin.sees_user(Uuid::from_u128(2)),
            UserSight::IfMemberOf(admin.org_id)
        );
        let root = Caller {
            is_superadmin: true,
            ..caller(None)
        };
        assert_eq!(root.sees_user(Uuid::from_u128(2)), UserSight::Yes);
        assert_eq!(root.users_listed(None), None);
        assert_eq!(admin.users_listed(None), Some(admin.org_id));
        assert_eq!(
            admin.users_listed(Some(Uuid::from_u128(3))),
            Some(admin.org_id)
        );
        assert_eq!(admin.new_user_organization(None), Some(admin.org_id));
        assert_eq!(root.new_user_organization(None), None);
    }
}

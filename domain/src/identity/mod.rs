//! Identity and tenancy: organizations (with their members and roles), users, API keys and
//! login sessions.
//!
//! Events record facts only: who joined which organization with which role, that a password
//! changed, that a key was revoked. Password hashes and token or key hashes are never in events;
//! they live in a credentials table beside the log.

pub mod api_key;
pub mod caller;
pub mod organization;
pub mod session;
pub mod user;

use serde::{Deserialize, Serialize};

/// A member's role in an organization, from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, creates and changes.
    Member,
    /// Also manages members and API keys.
    Admin,
    /// Also deletes the organization.
    Owner,
}

/// What a caller may want to do in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read its resources.
    Read,
    /// Create and change its resources.
    Write,
    /// Add, change and remove members; create and revoke API keys.
    Manage,
    /// Delete (or deactivate) the organization itself.
    Own,
}

/// Who acts: a user, and whether they administer the whole platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The user.
    pub user_id: uuid::Uuid,
    /// A superadmin may do anything in any organization.
    pub is_superadmin: bool,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// The least powerful role that has a permission.
    pub fn needed_for(permission: Permission) -> Role {
        match permission {
            Permission::Read => Role::Viewer,
            Permission::Write => Role::Member,
            Permission::Manage => Role::Admin,
            Permission::Own => Role::Owner,
        }
    }

    /// Whether this role has the permission.
    pub fn allows(self, permission: Permission) -> bool {
        self >= Role::needed_for(permission)
    }

    /// The API name (`owner`, `admin`, `member`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Reads an API name.
    pub fn parse(raw: &str) -> Result<Role, crate::value::InvalidValue> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                crate::value::invalid("role", "must be one of owner, admin, member, viewer")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_the_permissions_of_those_below_it() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Member, [true, true, false, false]),
            (Role::Admin, [true, true, true, false]),
            (Role::Owner, [true, true, true, true]),
        ];
        for (role, expected) in table {
            let got = [Read, Write, Manage, Own].map(|p| role.allows(p));
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn a_role_reads_back_from_its_api_name_and_serializes_as_it() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
        }
        assert!(Role::parse("root").is_err());
    }
}

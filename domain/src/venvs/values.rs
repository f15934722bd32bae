//! The values an environment is made of: its name, its Python version and its backend.

use serde::{Deserialize, Serialize};

use crate::value::{InvalidValue, invalid};

/// Longest environment name (GestVenv: 255).
pub const MAX_NAME_CHARS: usize = 255;

/// An environment's name: 1 to 255 of `[A-Za-z0-9_-]` (GestVenv's rule), so that it is also a
/// safe directory name: no dot, no slash, never `.` or `..`. Unique within an organization,
/// case aside.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    /// Parses a name from input (not trimmed: a space is refused like any other character).
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() || raw.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "name",
                "may hold only letters, digits, '_' and '-' ([a-zA-Z0-9_-])",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What makes it unique within an organization: the name, case aside.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A Python version an environment is made with: `3.9` to `3.13` (minor versions only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PythonVersion {
    /// Always 3.
    pub major: u8,
    /// 9 to 13.
    pub minor: u8,
}

impl PythonVersion {
    /// The oldest accepted.
    pub const OLDEST: Self = Self { major: 3, minor: 9 };
    /// The newest accepted.
    pub const NEWEST: Self = Self {
        major: 3,
        minor: 13,
    };

    /// Every accepted version, oldest first.
    pub fn all() -> impl Iterator<Item = Self> {
        (Self::OLDEST.minor..=Self::NEWEST.minor).map(|minor| Self { major: 3, minor })
    }

    /// Parses `3.N` (a patch, `3.11.7`, is refused: environments name minor versions).
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let message = || {
            format!(
                "must be a Python version from {} to {} (for example \"3.11\")",
                Self::OLDEST,
                Self::NEWEST
            )
        };
        let (major, minor) = raw
            .split_once('.')
            .ok_or_else(|| invalid("python_version", message()))?;
        let parse = |s: &str| {
            (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u8>().ok())
                .flatten()
        };
        match (parse(major), parse(minor)) {
            (Some(3), Some(minor))
                if (Self::OLDEST.minor..=Self::NEWEST.minor).contains(&minor) =>
            {
                Ok(Self { major: 3, minor })
            }
            _ => Err(invalid("python_version", message())),
        }
    }
}

impl std::fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl TryFrom<String> for PythonVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|e| e.message)
    }
}

impl From<PythonVersion> for String {
    fn from(v: PythonVersion) -> String {
        v.to_string()
    }
}

/// The tool that makes an environment and installs into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `python -m venv` and pip.
    Pip,
    /// uv (`uv venv`, `uv pip`).
    Uv,
    /// Poetry.
    Poetry,
    /// PDM.
    Pdm,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [Self; 4] = [Self::Pip, Self::Uv, Self::Poetry, Self::Pdm];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pip => "pip",
            Self::Uv => "uv",
            Self::Poetry => "poetry",
            Self::Pdm => "pdm",
        }
    }

    /// Parses a backend's name.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == raw)
            .ok_or_else(|| invalid("backend", "must be one of pip, uv, poetry, pdm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gestvenvs_rule_and_cannot_leave_a_directory() {
        for ok in ["my-project", "a", "A_1-b", &"x".repeat(255)] {
            assert!(EnvName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a.b",
            "../x",
            &"x".repeat(256),
        ] {
            assert_eq!(EnvName::parse(bad).unwrap_err().field, "name", "{bad}");
        }
        assert_eq!(EnvName::parse("My-Env").unwrap().key(), "my-env");
    }

    #[test]
    fn python_versions_are_minor_versions_from_3_9_to_3_13() {
        let all: Vec<String> = PythonVersion::all().map(|v| v.to_string()).collect();
        assert_eq!(all, ["3.9", "3.10", "3.11", "3.12", "3.13"]);
        for bad in [
            "3.8", "3.14", "2.7", "3", "3.11.7", "3.x", " 3.11", "3.011", "4.0", "",
        ] {
            assert!(PythonVersion::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_value(PythonVersion::parse("3.10").unwrap()).unwrap(),
            "3.10"
        );
    }

    #[test]
    fn backends_are_the_four_gestvenv_names() {
        for b in BackendKind::ALL {
            assert_eq!(BackendKind::parse(b.as_str()), Ok(b));
        }
        assert!(BackendKind::parse("conda").is_err());
    }
}

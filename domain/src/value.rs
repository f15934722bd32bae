//! What every context's value types share.

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    /// The field, as the API names it.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// An [`InvalidValue`] for this field.
pub fn invalid(field: &'static str, message: impl Into<String>) -> InvalidValue {
    InvalidValue {
        field,
        message: message.into(),
    }
}

/// Parses free text: trimmed, `min..=max` characters, no control characters.
pub fn text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<String, InvalidValue> {
    let value = raw.trim();
    let chars = value.chars().count();
    if chars == 0 && min > 0 {
        return Err(invalid(field, "must not be empty"));
    }
    if chars < min {
        return Err(invalid(field, format!("must be at least {min} characters")));
    }
    if chars > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

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

/// Characters that show nothing (Unicode's `Default_Ignorable_Code_Point`: zero-width spaces
/// and joiners, word joiners, invisible operators, variation selectors, tag characters, Hangul
/// fillers, the soft hyphen…), line and paragraph separators, and every bidirectional control
/// (U+061C, U+200E/F, U+202A..U+202E, U+2066..U+2069): a name holding one looks like another.
const INVISIBLE: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{34f}', '\u{34f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{17b4}', '\u{17b5}'),
    ('\u{180b}', '\u{180f}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{2028}', '\u{202e}'),
    ('\u{2060}', '\u{206f}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    ('\u{fff0}', '\u{fff8}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0000}', '\u{e0fff}'),
];

/// Whether `c` changes the direction text is shown in (Unicode's `Bidi_Control`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` shows nothing or changes the direction of what follows (see [`INVISIBLE`]).
pub fn is_invisible(c: char) -> bool {
    INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Refuses invisible characters and bidirectional controls, naming the first one found.
pub fn visible(field: &'static str, value: &str) -> Result<(), InvalidValue> {
    match value.chars().find(|&c| is_invisible(c)) {
        None => Ok(()),
        Some(c) if is_bidi_control(c) => Err(invalid(
            field,
            format!(
                "must not contain bidirectional control characters (found U+{:04X})",
                u32::from(c)
            ),
        )),
        Some(c) => Err(invalid(
            field,
            format!(
                "must not contain invisible characters (found U+{:04X})",
                u32::from(c)
            ),
        )),
    }
}

/// Unicode's compatibility normalization (NFKC): full-width letters become ASCII, ligatures
/// their letters, compatibility spaces a space.
pub fn nfkc(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.nfkc().collect()
}

/// Parses a name that must be unique: NFKC-normalized (the form stored and shown), then
/// [`text`]'s rules, and no invisible or bidirectional control character. Its uniqueness key
/// is [`name_key`].
pub fn unique_name(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<String, InvalidValue> {
    let name = text(field, &nfkc(raw), min, max)?;
    visible(field, &name)?;
    Ok(name)
}

/// A name as it sorts and compares without case: NFKC, inner spacing collapsed, lowercase.
pub fn folded(name: &str) -> String {
    nfkc(name)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The key that makes a name unique: two names whose keys are equal look alike. It is the
/// confusable skeleton (Unicode UTS #39) of the [`folded`] name, lowercased once more (a
/// skeleton maps some characters to capitals: `0` to `O`), with invisible characters dropped
/// (names read back from old events may hold them). So case, spacing, compatibility forms
/// (`ＡｌｐｈａＰｒｏｊ`) and look-alikes from other scripts (Cyrillic `А`) do not make a name
/// new.
pub fn name_key(name: &str) -> String {
    let folded: String = folded(name).chars().filter(|&c| !is_invisible(c)).collect();
    unicode_security::skeleton(&folded)
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_width_space_in_a_name_is_refused_naming_the_field() {
        let err = unique_name("name", "Alpha\u{200b}Proj", 1, 100).unwrap_err();
        assert_eq!(err.field, "name");
        assert!(err.message.contains("invisible"), "{}", err.message);
        assert!(err.message.contains("U+200B"), "{}", err.message);
    }

    #[test]
    fn a_right_to_left_override_in_a_name_is_refused_as_a_bidirectional_control() {
        for raw in [
            "AlphaProj\u{202e}",
            "\u{2067}AlphaProj",
            "Alpha\u{200f}Proj",
            "Alpha\u{61c}Proj",
        ] {
            let err = unique_name("name", raw, 1, 100).unwrap_err();
            assert!(
                err.message.contains("bidirectional"),
                "{raw:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn other_invisible_characters_are_refused_too() {
        for raw in [
            "Alpha\u{feff}Proj",
            "Alpha\u{2060}Proj",
            "Alpha\u{200d}Proj",
            "Alpha\u{fe0f}Proj",
            "Alpha\u{e0041}Proj",
            "Alpha\u{ad}Proj",
            "Alpha\u{3164}Proj",
            "Alpha\u{2028}Proj",
        ] {
            assert!(
                unique_name("name", raw, 1, 100).is_err(),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn a_full_width_name_normalizes_to_its_ascii_form() {
        assert_eq!(
            unique_name("name", "ＡｌｐｈａＰｒｏｊ", 1, 100).unwrap(),
            "AlphaProj"
        );
        assert_eq!(
            unique_name("name", "ﬁle\u{3000}x", 1, 100).unwrap(),
            "file x"
        );
    }

    #[test]
    fn a_cyrillic_look_alike_has_the_same_key_as_the_latin_name() {
        // U+0410 CYRILLIC CAPITAL LETTER A, U+043E CYRILLIC SMALL LETTER O.
        assert_eq!(name_key("\u{410}lphaProj"), name_key("AlphaProj"));
        assert_eq!(name_key("AlphaPr\u{43e}j"), name_key("AlphaProj"));
        assert_ne!(name_key("BetaProj"), name_key("AlphaProj"));
    }

    #[test]
    fn keys_ignore_case_spacing_and_compatibility_forms() {
        let key = name_key("Alpha Proj");
        for same in [
            "alpha proj",
            "ALPHA   PROJ",
            "Ａｌｐｈａ\u{3000}Ｐｒｏｊ",
            " alpha proj ",
        ] {
            assert_eq!(name_key(same), key, "{same:?}");
        }
        assert_eq!(name_key("dem0"), name_key("Demo"));
        assert_eq!(name_key("Alpha\u{200b}Proj"), name_key("AlphaProj"));
    }

    #[test]
    fn letters_of_other_scripts_are_names_like_any() {
        assert_eq!(
            unique_name("name", "Café Ünïcode", 1, 100).unwrap(),
            "Café Ünïcode"
        );
        assert!(unique_name("name", "日本語のプロジェクト", 1, 100).is_ok());
        assert_ne!(name_key("日本"), name_key("中国"));
    }
}

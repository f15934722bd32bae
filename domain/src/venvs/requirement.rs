//! Python package requirements, checked before they ever reach pip or uv.
//!
//! A requirement is handed to the installer as one argv element, never through a shell; yet
//! pip and uv read much more than package names from their arguments: options (`-e`, `-r`,
//! `--index-url`), URLs, VCS references (`git+…`) and local paths, each of which would install
//! code from somewhere other than the package index. So only PEP 508's name-based form is
//! accepted: a name, optional extras, optional version specifiers (PEP 440 versions) and an
//! optional environment marker, each parsed strictly; anything else is refused with a message
//! saying why. A parsed [`Requirement`] is held in a normalized form ([`Requirement::to_arg`])
//! that parses back to itself.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::value::{InvalidValue, invalid};

/// The field a requirement is reported under by [`Requirement::parse`].
pub const FIELD: &str = "packages";

/// The field a bare package name is reported under by [`parse_name`].
pub const NAME_FIELD: &str = "package_name";

/// The field a version is reported under by [`Requirement::with_version`].
pub const VERSION_FIELD: &str = "to_version";

/// Longest package name (and longest extra).
pub const MAX_NAME_CHARS: usize = 200;

/// Longest requirement, as written.
pub const MAX_REQUIREMENT_CHARS: usize = 500;

/// The comparison operators of PEP 440, longest first where one begins another.
const OPERATORS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];

/// Characters a shell gives a meaning to and no requirement holds.
const SHELL_METACHARACTERS: [char; 4] = ['&', '|', '`', '$'];

/// Prefixes of pip's VCS references.
const VCS_PREFIXES: [&str; 4] = ["git+", "hg+", "svn+", "bzr+"];

/// The variables an environment marker may name (PEP 508).
const MARKER_VARIABLES: [&str; 12] = [
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
];

/// Why a requirement starting with `-` is refused.
const OPTION_REFUSED: &str = "pip options such as -e, -r or --index-url are not accepted: a \
                              requirement must not start with '-'";

/// What a version looks like, for the messages that refuse one.
const VERSION_EXAMPLES: &str = "such as 1.0, 2.1rc1, 1.0.post1.dev2, 1!2.0 or 1.0+cpu";

/// A package requirement in PEP 508's name-based form, such as
/// `requests[security]>=2.0,<3; python_version >= "3.9"`: a package name, its extras, its version
/// specifiers and an environment marker. Never an option, a URL, a VCS reference or a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Requirement {
    /// The package's name, as written.
    name: String,
    /// Its extras, as written, in order.
    extras: Vec<String>,
    /// Its version specifiers, normalized: clauses joined by `,`, without spaces (`>=1.0,<2`).
    specifier: Option<String>,
    /// Its environment marker (what follows `;`), trimmed.
    marker: Option<String>,
}

impl Requirement {
    /// Parses a requirement (surrounding spaces aside). Refused, under the field `packages`:
    /// empty strings, more than [`MAX_REQUIREMENT_CHARS`] characters, control and non-ASCII
    /// characters, pip options, shell metacharacters, VCS references, URLs, direct references,
    /// paths, and anything that does not follow the grammar.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        parse_requirement(raw).map_err(|message| invalid(FIELD, message))
    }

    /// The package's name, as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The package's name normalized per PEP 503 (see [`normalize_name`]): what tells two
    /// requirements for the same package.
    pub fn normalized_name(&self) -> String {
        normalize_name(&self.name)
    }

    /// Its extras, as written, in order.
    pub fn extras(&self) -> &[String] {
        &self.extras
    }

    /// Its version specifiers, normalized (`>=1.0,<2`), if any.
    pub fn specifier(&self) -> Option<&str> {
        self.specifier.as_deref()
    }

    /// Its environment marker (what follows `;`), if any.
    pub fn marker(&self) -> Option<&str> {
        self.marker.as_deref()
    }

    /// The single argv element to hand to pip or uv, which parses back to this requirement:
    /// `requests[security]>=2.0,<3; python_version >= "3.9"`.
    pub fn to_arg(&self) -> String {
        let mut arg = self.name.clone();
        if !self.extras.is_empty() {
            arg.push('[');
            arg.push_str(&self.extras.join(","));
            arg.push(']');
        }
        if let Some(specifier) = &self.specifier {
            arg.push_str(specifier);
        }
        if let Some(marker) = &self.marker {
            arg.push_str("; ");
            arg.push_str(marker);
        }
        arg
    }

    /// The same package, with its extras, pinned to exactly `version` (`name==version`); its
    /// version specifiers and its marker are dropped. `version` must be a PEP 440 version,
    /// written as is (no spaces, no wildcard; a local label such as `+cpu` is allowed), else it
    /// is refused under the field `to_version`.
    pub fn with_version(&self, version: &str) -> Result<Self, InvalidValue> {
        if version.is_empty() {
            return Err(invalid(VERSION_FIELD, "must not be empty"));
        }
        if parse_version(version).is_none() {
            return Err(invalid(
                VERSION_FIELD,
                format!(
                    "{} is not a PEP 440 version ({VERSION_EXAMPLES})",
                    quoted(version)
                ),
            ));
        }
        let pinned = Self {
            name: self.name.clone(),
            extras: self.extras.clone(),
            specifier: Some(format!("=={version}")),
            marker: None,
        };
        let chars = pinned.to_arg().chars().count();
        if chars > MAX_REQUIREMENT_CHARS {
            return Err(invalid(
                VERSION_FIELD,
                format!(
                    "makes a requirement of {chars} characters (at most {MAX_REQUIREMENT_CHARS})"
                ),
            ));
        }
        Ok(pinned)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_arg())
    }
}

impl TryFrom<String> for Requirement {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|e| e.message)
    }
}

impl From<Requirement> for String {
    fn from(r: Requirement) -> String {
        r.to_arg()
    }
}

/// Parses a list of requirements, reporting every bad entry at once, each under `field` and
/// with a message naming its index and its value (`packages[2] "-e ." is not a package
/// requirement: …`). Refuses more than `max` entries (then nothing else is checked), and two
/// entries for the same package ([`Requirement::normalized_name`]: `Six` and `six`). An empty
/// list is accepted: whether one may be is the caller's to say.
pub fn parse_list(
    field: &'static str,
    raw: &[String],
    max: usize,
) -> Result<Vec<Requirement>, Vec<InvalidValue>> {
    if raw.len() > max {
        return Err(vec![invalid(
            field,
            format!("must hold at most {max} packages (got {})", raw.len()),
        )]);
    }
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(raw.len());
    let mut first_of: HashMap<String, usize> = HashMap::new();
    for (index, entry) in raw.iter().enumerate() {
        match parse_requirement(entry) {
            Err(why) => errors.push(invalid(
                field,
                format!(
                    "{field}[{index}] {} is not a package requirement: {why}",
                    quoted(entry)
                ),
            )),
            Ok(requirement) => match first_of.entry(requirement.normalized_name()) {
                Entry::Occupied(first) => errors.push(invalid(
                    field,
                    format!(
                        "{field}[{index}] {} names the same package ({}) as {field}[{}] {}: \
                         list each package once",
                        quoted(entry),
                        first.key(),
                        first.get(),
                        quoted(&raw[*first.get()])
                    ),
                )),
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    parsed.push(requirement);
                }
            },
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// Parses a bare package name (as in `DELETE /environments/{id}/packages/{name}`): 1 to
/// [`MAX_NAME_CHARS`] of `[A-Za-z0-9._-]`, starting and ending with a letter or digit, not
/// trimmed; returned as written. Refused under the field `package_name`.
pub fn parse_name(raw: &str) -> Result<String, InvalidValue> {
    if raw.is_empty() {
        return Err(invalid(NAME_FIELD, "must not be empty"));
    }
    check_name("the package name", raw).map_err(|why| invalid(NAME_FIELD, why))?;
    Ok(raw.to_owned())
}

/// A package name normalized per PEP 503: lowercase, every run of `-`, `_` and `.` made one
/// `-` (`Foo.Bar_baz` is `foo-bar-baz`).
pub fn normalize_name(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    let mut after_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !after_separator {
                normalized.push('-');
            }
            after_separator = true;
        } else {
            normalized.extend(c.to_lowercase());
            after_separator = false;
        }
    }
    normalized
}

/// Parses a requirement, or says why it is not one.
fn parse_requirement(raw: &str) -> Result<Requirement, String> {
    if raw.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let chars = raw.chars().count();
    if chars > MAX_REQUIREMENT_CHARS {
        return Err(format!(
            "must be at most {MAX_REQUIREMENT_CHARS} characters (got {chars})"
        ));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters such as a newline, a tab or NUL (found {})",
            shown(c)
        ));
    }
    if let Some(c) = raw.chars().find(|c| !c.is_ascii()) {
        return Err(format!(
            "may hold only ASCII characters (found {})",
            shown(c)
        ));
    }
    let text = raw.trim_matches(' ');
    if text.starts_with('-') {
        return Err(OPTION_REFUSED.into());
    }
    if let Some(c) = text.chars().find(|c| SHELL_METACHARACTERS.contains(c)) {
        return Err(format!(
            "must not contain shell metacharacters such as '&', '|', '`' or '$' (found {})",
            shown(c)
        ));
    }
    let (head, marker) = match text.split_once(';') {
        Some((head, marker)) => (head.trim_end_matches(' '), Some(marker.trim_matches(' '))),
        None => (text, None),
    };
    refuse_other_sources(head)?;
    let (name, extras, specifier) = parse_head(head)?;
    let marker = marker.map(parse_marker).transpose()?;
    Ok(Requirement {
        name,
        extras,
        specifier,
        marker,
    })
}

/// Refuses what names a source other than the package index: VCS references, direct
/// references, URLs and paths.
fn refuse_other_sources(head: &str) -> Result<(), String> {
    let lower = head.to_ascii_lowercase();
    if VCS_PREFIXES.iter().any(|prefix| lower.starts_with(prefix)) {
        return Err(
            "VCS references (git+…, hg+…, svn+…, bzr+…) are not accepted: name a package from \
             the index"
                .into(),
        );
    }
    if head.contains('@') {
        return Err(
            "direct references (name @ url) are not accepted: name a package from the index and \
             pin its version with a specifier such as ==1.0"
                .into(),
        );
    }
    if head.contains("://") {
        return Err("URLs are not accepted: name a package from the index".into());
    }
    if head.contains(['/', '\\'])
        || head.starts_with('.')
        || (head.starts_with('~') && !head.starts_with("~="))
    {
        return Err("paths are not accepted: name a package from the index".into());
    }
    Ok(())
}

/// What comes before the marker: a name, its extras and its version specifiers.
type Head = (String, Vec<String>, Option<String>);

/// Parses what comes before the marker: `name [extras] specifiers` or `name [extras]
/// (specifiers)`, spaces allowed between them.
fn parse_head(head: &str) -> Result<Head, String> {
    let end = head.find(|c: char| !is_name_char(c)).unwrap_or(head.len());
    let name = &head[..end];
    if name.is_empty() {
        return Err(match head.chars().next() {
            None => "must start with a package name".into(),
            Some(c) => format!("must start with a package name (found {})", shown(c)),
        });
    }
    check_name("the package name", name)?;
    let mut rest = head[end..].trim_start_matches(' ');
    let mut extras = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err(format!(
                "the extras after {} are not closed with ']'",
                quoted(name)
            ));
        };
        extras = parse_extras(&after[..close])?;
        rest = after[close + 1..].trim_start_matches(' ');
    }
    let specifier = if rest.is_empty() {
        None
    } else if let Some(after) = rest.strip_prefix('(') {
        let Some(close) = after.find(')') else {
            return Err("the version specifiers opened with '(' are not closed with ')'".into());
        };
        let tail = after[close + 1..].trim_matches(' ');
        if !tail.is_empty() {
            return Err(format!(
                "unexpected {} after the version specifiers in parentheses",
                quoted(tail)
            ));
        }
        let inner = after[..close].trim_matches(' ');
        if inner.is_empty() {
            return Err("the parentheses after the package name hold no version specifier".into());
        }
        Some(parse_specifiers(inner)?)
    } else if rest.starts_with(['<', '>', '=', '!', '~']) {
        Some(parse_specifiers(rest)?)
    } else if rest.starts_with('-') {
        return Err(format!(
            "pip options such as {} are not accepted",
            quoted(rest)
        ));
    } else {
        return Err(format!(
            "unexpected {} after the package name (expected extras such as [socks], version \
             specifiers such as >=1.0,<2, or ';' and an environment marker)",
            quoted(rest)
        ));
    };
    Ok((name.to_owned(), extras, specifier))
}

/// Parses what is between the brackets of `name[a, b]`: names separated by commas (none at
/// all is allowed, as PEP 508 allows it).
fn parse_extras(list: &str) -> Result<Vec<String>, String> {
    if list.trim_matches(' ').is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|extra| {
            let extra = extra.trim_matches(' ');
            if extra.is_empty() {
                return Err(format!(
                    "the extras [{list}] have an empty entry (a ',' with nothing before or after \
                     it)"
                ));
            }
            check_name("the extra", extra)?;
            Ok(extra.to_owned())
        })
        .collect()
}

/// Checks a package name or an extra: at most [`MAX_NAME_CHARS`] of `[A-Za-z0-9._-]`,
/// starting and ending with a letter or digit. `what` names it in the message.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "{what} must be at most {MAX_NAME_CHARS} characters (got {chars})"
        ));
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(format!(
            "{what} {} may hold only letters, digits, '.', '_' and '-' (found {})",
            quoted(name),
            shown(c)
        ));
    }
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alphanumeric(name.chars().next()) || !alphanumeric(name.chars().next_back()) {
        return Err(format!(
            "{what} {} must start and end with a letter or digit",
            quoted(name)
        ));
    }
    Ok(())
}

/// Whether `c` may be part of a package name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Parses version specifiers (`>=1.0, <2`): clauses separated by commas; returns them
/// normalized (`>=1.0,<2`).
fn parse_specifiers(text: &str) -> Result<String, String> {
    let mut clauses = Vec::new();
    for clause in text.split(',') {
        let clause = clause.trim_matches(' ');
        if clause.is_empty() {
            return Err(format!(
                "the version specifiers {} have an empty clause (a ',' with nothing before or \
                 after it)",
                quoted(text)
            ));
        }
        clauses.push(parse_clause(clause)?);
    }
    Ok(clauses.join(","))
}

/// Parses one version specifier (`>= 1.0`): an operator and a version; returns it without
/// spaces (`>=1.0`).
fn parse_clause(clause: &str) -> Result<String, String> {
    let Some(op) = OPERATORS.into_iter().find(|op| clause.starts_with(op)) else {
        return Err(format!(
            "the version specifier {} does not start with a comparison operator (~=, ==, !=, \
             <=, >=, <, > or ===)",
            quoted(clause)
        ));
    };
    let version = clause[op.len()..].trim_start_matches(' ');
    if version.is_empty() {
        return Err(format!(
            "the version specifier {} has no version after {op}",
            quoted(clause)
        ));
    }
    let not_a_version = || {
        format!(
            "{} in the version specifier {} is not a PEP 440 version ({VERSION_EXAMPLES})",
            quoted(version),
            quoted(clause)
        )
    };
    if op == "===" {
        // Arbitrary equality compares text: any version-like token, even one PEP 440 refuses.
        let token = version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+!-".contains(&b));
        let ends = version.starts_with(|c: char| c.is_ascii_alphanumeric())
            && version.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !(token && ends) {
            return Err(format!(
                "{} in the version specifier {} is not a version: after === only letters, \
                 digits and . _ + ! - are allowed, starting and ending with a letter or digit",
                quoted(version),
                quoted(clause)
            ));
        }
    } else if let Some(prefix) = version.strip_suffix(".*") {
        if !matches!(op, "==" | "!=") {
            return Err(format!(
                "the version specifier {} has a wildcard (.*), which only == and != allow",
                quoted(clause)
            ));
        }
        if !parse_version(prefix).is_some_and(|v| v.release_only) {
            return Err(format!(
                "the version specifier {} has a wildcard (.*) after {}, which is not a release \
                 such as 1.2",
                quoted(clause),
                quoted(prefix)
            ));
        }
    } else {
        let parsed = parse_version(version).ok_or_else(not_a_version)?;
        if parsed.local && !matches!(op, "==" | "!=") {
            return Err(format!(
                "the version specifier {} has a local version label (+…), which only ==, != \
                 and === allow",
                quoted(clause)
            ));
        }
        if op == "~=" && parsed.release < 2 {
            return Err(format!(
                "the version specifier {} needs a version of at least two numbers, such as \
                 ~=1.4",
                quoted(clause)
            ));
        }
    }
    Ok(format!("{op}{version}"))
}

/// What the checks of a specifier need to know of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    /// How many numbers its release has (`1.2.3`: 3).
    release: usize,
    /// Whether it has a local label (`+cpu`).
    local: bool,
    /// Whether it is only an epoch and a release: no pre, post, dev or local part.
    release_only: bool,
}

/// Parses a PEP 440 public version in its normalized spelling, with an optional local label:
/// `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, the local label being letters and digits in
/// segments separated by `.`. None if `version` is not one.
fn parse_version(version: &str) -> Option<Version> {
    /// Moves `i` past the digits at `i`; whether there were any.
    fn digits(s: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    }
    /// Pre-release tags, `rc` first (none begins another).
    const PRE_TAGS: [&[u8]; 3] = [b"rc", b"a", b"b"];
    /// Post- and development-release tags, in the order they come.
    const POST_DEV_TAGS: [&[u8]; 2] = [b".post", b".dev"];
    let s = version.as_bytes();
    let mut i = 0;
    if !digits(s, &mut i) {
        return None;
    }
    if s.get(i) == Some(&b'!') {
        i += 1;
        if !digits(s, &mut i) {
            return None;
        }
    }
    let mut release = 1;
    while s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        digits(s, &mut i);
        release += 1;
    }
    let release_end = i;
    if let Some(tag) = PRE_TAGS.into_iter().find(|tag| s[i..].starts_with(tag)) {
        i += tag.len();
        if !digits(s, &mut i) {
            return None;
        }
    }
    for tag in POST_DEV_TAGS {
        if s[i..].starts_with(tag) {
            i += tag.len();
            if !digits(s, &mut i) {
                return None;
            }
        }
    }
    let mut local = false;
    if s.get(i) == Some(&b'+') {
        local = true;
        loop {
            i += 1;
            let start = i;
            while s.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                i += 1;
            }
            if i == start {
                return None;
            }
            if s.get(i) != Some(&b'.') {
                break;
            }
        }
    }
    (i == s.len()).then_some(Version {
        release,
        local,
        release_only: release_end == s.len(),
    })
}

/// Checks an environment marker (what follows `;`, trimmed) and returns it as written: only
/// the characters markers use, and PEP 508's marker grammar.
fn parse_marker(marker: &str) -> Result<String, String> {
    if marker.is_empty() {
        return Err(
            "nothing follows ';', which must be followed by an environment marker such as \
             python_version < \"3.11\""
                .into(),
        );
    }
    if let Some(c) = marker.chars().find(|&c| !is_marker_char(c)) {
        return Err(format!(
            "the environment marker {} may hold only letters, digits, spaces and . _ - ' \" < > \
             = ! ~ ( ) (found {})",
            quoted(marker),
            shown(c)
        ));
    }
    let invalid_marker = |why: String| {
        format!(
            "the environment marker {} is not valid: {why}",
            quoted(marker)
        )
    };
    let tokens = tokenize(marker).map_err(invalid_marker)?;
    let mut parser = MarkerParser {
        tokens: &tokens,
        pos: 0,
    };
    parser
        .or()
        .and_then(|()| parser.end())
        .map_err(invalid_marker)?;
    Ok(marker.to_owned())
}

/// Whether `c` may appear in an environment marker.
fn is_marker_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._-'\"<>=!~()".contains(c)
}

/// A piece of an environment marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// A quoted string, quotes included.
    Text(&'a str),
    /// A comparison operator (`<=`).
    Compare(&'a str),
    /// A variable or a keyword (`python_version`, `and`, `not`, `in`…).
    Word(&'a str),
}

/// How a token (or the end of the marker) is named in a message.
fn describe(token: Option<Token<'_>>) -> String {
    match token {
        None => "the end".into(),
        Some(Token::Open) => "'('".into(),
        Some(Token::Close) => "')'".into(),
        Some(Token::Text(text)) => text.into(),
        Some(Token::Compare(word) | Token::Word(word)) => format!("'{word}'"),
    }
}

/// Splits an environment marker (of [`is_marker_char`]s only) into tokens.
fn tokenize(marker: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = marker.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b' ' => i += 1,
            b'(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            b')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            quote @ (b'\'' | b'"') => {
                let Some(length) = marker[i + 1..].find(char::from(quote)) else {
                    return Err(format!("the string {} is not closed", quoted(&marker[i..])));
                };
                i += length + 2;
                tokens.push(Token::Text(&marker[start..i]));
            }
            b'<' | b'>' | b'=' | b'!' | b'~' => {
                while i < bytes.len() && b"<>=!~".contains(&bytes[i]) {
                    i += 1;
                }
                let op = &marker[start..i];
                if !OPERATORS.contains(&op) {
                    return Err(format!(
                        "{} is not a comparison operator (expected ~=, ==, !=, <=, >=, <, >, \
                         ===, in or not in)",
                        quoted(op)
                    ));
                }
                tokens.push(Token::Compare(op));
            }
            _ => {
                while i < bytes.len() && is_name_char(char::from(bytes[i])) {
                    i += 1;
                }
                if i == start {
                    return Err(format!("unexpected {}", shown(char::from(bytes[start]))));
                }
                tokens.push(Token::Word(&marker[start..i]));
            }
        }
    }
    Ok(tokens)
}

/// A recursive-descent parser of PEP 508's marker grammar:
/// `or = and ('or' and)*`, `and = expression ('and' expression)*`,
/// `expression = '(' or ')' | value operator value`, `value = variable | string`,
/// `operator = comparison | 'in' | 'not' 'in'`.
struct MarkerParser<'t, 'a> {
    /// The marker's tokens.
    tokens: &'t [Token<'a>],
    /// Where the parser is.
    pos: usize,
}

impl<'a> MarkerParser<'_, 'a> {
    /// The token at hand, if any.
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.pos).copied()
    }

    /// Takes the token at hand.
    fn take(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    /// Takes the token at hand if it is the keyword `word`.
    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek() == Some(Token::Word(word));
        if found {
            self.pos += 1;
        }
        found
    }

    /// `and ('or' and)*`.
    fn or(&mut self) -> Result<(), String> {
        self.and()?;
        while self.eat_word("or") {
            self.and()?;
        }
        Ok(())
    }

    /// `expression ('and' expression)*`.
    fn and(&mut self) -> Result<(), String> {
        self.expression()?;
        while self.eat_word("and") {
            self.expression()?;
        }
        Ok(())
    }

    /// `'(' or ')' | value operator value`.
    fn expression(&mut self) -> Result<(), String> {
        if self.peek() == Some(Token::Open) {
            self.pos += 1;
            self.or()?;
            return match self.take() {
                Some(Token::Close) => Ok(()),
                other => Err(format!("expected ')' but found {}", describe(other))),
            };
        }
        self.value()?;
        self.operator()?;
        self.value()
    }

    /// A marker variable or a quoted string.
    fn value(&mut self) -> Result<(), String> {
        match self.take() {
            Some(Token::Text(_)) => Ok(()),
            Some(Token::Word(word)) if MARKER_VARIABLES.contains(&word) => Ok(()),
            Some(Token::Word(word @ ("and" | "or" | "not" | "in"))) => Err(format!(
                "expected a marker variable or a quoted string but found '{word}'"
            )),
            Some(Token::Word(word)) => Err(format!(
                "unknown marker variable {} (values must be quoted, as in python_version < \
                 \"3.11\")",
                quoted(word)
            )),
            other => Err(format!(
                "expected a marker variable or a quoted string but found {}",
                describe(other)
            )),
        }
    }

    /// A comparison, `in` or `not in`.
    fn operator(&mut self) -> Result<(), String> {
        match self.take() {
            Some(Token::Compare(_) | Token::Word("in")) => Ok(()),
            Some(Token::Word("not")) if self.eat_word("in") => Ok(()),
            Some(Token::Word("not")) => Err("'not' must be followed by 'in'".into()),
            other => Err(format!(
                "expected a comparison (such as <, >=, == or in) but found {}",
                describe(other)
            )),
        }
    }

    /// Refuses anything left over.
    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            other => Err(format!(
                "unexpected {} after a complete marker (join conditions with 'and' or 'or')",
                describe(other)
            )),
        }
    }
}

/// A character as a message shows it: `'&'` if printable ASCII, else its code point
/// (`U+000A`).
fn shown(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// A value as a message shows it: in double quotes, its first 60 characters, with quotes,
/// backslashes and anything but printable ASCII escaped (`"six\n"`), so that a message can
/// neither be forged nor hide a character.
fn quoted(value: &str) -> String {
    const MAX_SHOWN: usize = 60;
    let mut out = String::from("\"");
    for (n, c) in value.chars().enumerate() {
        if n == MAX_SHOWN {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            ' '..='~' => out.push(c),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `raw` is refused with, after checking it is refused under `packages`.
    fn refused(raw: &str) -> String {
        match Requirement::parse(raw) {
            Ok(requirement) => panic!("{raw:?} was accepted as {requirement:?}"),
            Err(err) => {
                assert_eq!(err.field, "packages", "{raw:?}");
                err.message
            }
        }
    }

    /// Owned strings, as a request body holds them.
    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|&s| s.to_owned()).collect()
    }

    const ACCEPTED: [&str; 10] = [
        "six",
        "idna==3.7",
        "requests[security,socks]>=2.0,<3",
        "Django (>=4.2)",
        "numpy~=1.26.0",
        "pkg!=1.*",
        "zope.interface",
        "foo_bar-baz==1.0.post1.dev2",
        "torch==2.1.0+cpu",
        "typing-extensions; python_version < \"3.11\"",
    ];

    #[test]
    fn name_based_requirements_are_accepted() {
        for raw in ACCEPTED {
            assert!(
                Requirement::parse(raw).is_ok(),
                "{raw:?}: {:?}",
                Requirement::parse(raw)
            );
        }
    }

    #[test]
    fn a_requirement_is_split_into_its_name_extras_specifiers_and_marker() {
        let r = Requirement::parse("requests[security,socks]>=2.0,<3").unwrap();
        assert_eq!(r.name(), "requests");
        assert_eq!(r.extras(), ["security", "socks"]);
        assert_eq!(r.specifier(), Some(">=2.0,<3"));
        assert_eq!(r.marker(), None);

        let r = Requirement::parse("typing-extensions; python_version < \"3.11\"").unwrap();
        assert_eq!(r.name(), "typing-extensions");
        assert!(r.extras().is_empty());
        assert_eq!(r.specifier(), None);
        assert_eq!(r.marker(), Some("python_version < \"3.11\""));

        let r = Requirement::parse("six").unwrap();
        assert_eq!((r.name(), r.specifier(), r.marker()), ("six", None, None));
    }

    #[test]
    fn the_argument_is_one_normalized_argv_element() {
        for (raw, arg) in [
            ("six", "six"),
            ("Django (>=4.2)", "Django>=4.2"),
            ("Django ( >= 4.2 , < 5 )", "Django>=4.2,<5"),
            ("  idna == 3.7  ", "idna==3.7"),
            (
                "requests [ security , socks ] >= 2.0 , < 3 ;python_version >= \"3.9\"  ",
                "requests[security,socks]>=2.0,<3; python_version >= \"3.9\"",
            ),
            ("six[]", "six"),
            ("torch==2.1.0+cpu", "torch==2.1.0+cpu"),
        ] {
            let requirement = Requirement::parse(raw).unwrap();
            assert_eq!(requirement.to_arg(), arg, "{raw:?}");
            assert_eq!(requirement.to_string(), arg, "{raw:?}");
        }
    }

    #[test]
    fn the_argument_parses_back_to_the_same_requirement() {
        for raw in ACCEPTED.into_iter().chain([
            "requests [security] >= 2.0 , < 3 ; python_version >= \"3.9\"",
            "a[b,c] (==1!2.0rc1.post2.dev3+local.7) ; os_name == 'nt' or extra == \"x\"",
        ]) {
            let requirement = Requirement::parse(raw).unwrap();
            let again = Requirement::parse(&requirement.to_arg()).unwrap();
            assert_eq!(again, requirement, "{raw:?}");
            assert_eq!(again.to_arg(), requirement.to_arg(), "{raw:?}");
        }
    }

    #[test]
    fn the_listed_hostile_and_malformed_requirements_are_refused() {
        for raw in [
            "-e .",
            "--index-url=http://x",
            "-r requirements.txt",
            "./local",
            "/abs/path",
            "~/x",
            "pkg @ https://example.com/p.whl",
            "git+https://github.com/a/b",
            "six; rm -rf /",
            "six && echo",
            "$(whoami)",
            "`id`",
            "six\n",
            "six>=",
            "six>=1.0,",
            "six===",
            "==1.0",
            "-six",
            "six-",
            "a b",
            "six[",
            "",
        ] {
            assert!(!refused(raw).is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn pip_options_are_refused() {
        for raw in [
            "-e .",
            "--index-url=http://x",
            "-r requirements.txt",
            "-six",
            " --extra-index-url x",
            "six --hash=sha256:abc",
        ] {
            assert!(
                refused(raw).contains("pip options"),
                "{raw:?}: {}",
                refused(raw)
            );
        }
    }

    #[test]
    fn urls_vcs_and_direct_references_are_refused() {
        for (raw, why) in [
            ("pkg @ https://example.com/p.whl", "direct references"),
            ("pkg@https://example.com/p.whl", "direct references"),
            ("pkg @ file:p.whl", "direct references"),
            ("git+https://github.com/a/b", "VCS references"),
            ("GIT+ssh://git@github.com/a/b", "VCS references"),
            ("hg+https://example.com/repo", "VCS references"),
            ("https://example.com/p.whl", "URLs"),
            ("file://p.whl", "URLs"),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw:?}: {message}");
        }
    }

    #[test]
    fn paths_are_refused() {
        for raw in [
            "./local",
            "/abs/path",
            "~/x",
            "~x",
            "..",
            ".hidden",
            "pkg/sub",
            "C:\\pkg",
            "dist\\p.whl",
        ] {
            let message = refused(raw);
            assert!(message.contains("paths"), "{raw:?}: {message}");
        }
    }

    #[test]
    fn shell_words_and_metacharacters_are_refused() {
        for (raw, why) in [
            ("six && echo", "shell metacharacters"),
            ("six || true", "shell metacharacters"),
            ("six | sh", "shell metacharacters"),
            ("$(whoami)", "shell metacharacters"),
            ("six$HOME", "shell metacharacters"),
            ("`id`", "shell metacharacters"),
            ("six; rm -rf /", "environment marker"),
            ("six; rm -rf", "unknown marker variable"),
            ("six;python_version<\"3\";id", "environment marker"),
            ("six > out.txt", "not a PEP 440 version"),
            ("six >/tmp/x", "paths"),
            ("six < in", "not a PEP 440 version"),
            ("six #comment", "unexpected"),
            ("six*", "unexpected"),
            ("six 'x'", "unexpected"),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw:?}: {message}");
        }
    }

    #[test]
    fn control_and_non_ascii_characters_are_refused() {
        for raw in [
            "six\n",
            "six\0",
            "\tsix",
            "six\r\n",
            "six\u{7f}",
            "si\u{1b}[0mx",
        ] {
            let message = refused(raw);
            assert!(message.contains("control characters"), "{raw:?}: {message}");
        }
        for raw in [
            "s\u{456}x",
            "six\u{200b}",
            "ｓｉｘ",
            "six\u{202e}",
            "six\u{a0}",
        ] {
            let message = refused(raw);
            assert!(message.contains("ASCII"), "{raw:?}: {message}");
        }
        assert!(refused("six\n").contains("U+000A"));
    }

    #[test]
    fn empty_and_whitespace_only_requirements_are_refused() {
        for raw in ["", " ", "   ", "\n", "\t \t"] {
            assert_eq!(refused(raw), "must not be empty", "{raw:?}");
        }
    }

    #[test]
    fn malformed_names_and_extras_are_refused() {
        for (raw, why) in [
            ("==1.0", "must start with a package name"),
            ("; python_version < \"3\"", "must start with a package name"),
            ("[x]", "must start with a package name"),
            ("six-", "must start and end with a letter or digit"),
            ("six.", "must start and end with a letter or digit"),
            ("six_", "must start and end with a letter or digit"),
            ("_six", "must start and end with a letter or digit"),
            ("a b", "unexpected \"b\""),
            ("six[", "not closed with ']'"),
            ("six[socks", "not closed with ']'"),
            ("six[socks,]", "empty entry"),
            ("six[,socks]", "empty entry"),
            ("six[so cks]", "may hold only letters"),
            ("six[-x]", "must start and end"),
            ("six[x]]", "unexpected"),
            ("six[x]y", "unexpected"),
            ("six (>=1.0", "not closed with ')'"),
            ("six ()", "hold no version specifier"),
            ("six (>=1.0) x", "unexpected \"x\""),
            ("six (>=1.0 (<2))", "unexpected \")\""),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw:?}: {message}");
        }
    }

    #[test]
    fn malformed_version_specifiers_are_refused() {
        for (raw, why) in [
            ("six>=", "has no version"),
            ("six>= ", "has no version"),
            ("six===", "has no version"),
            ("six>=1.0,", "empty clause"),
            ("six>=1.0,,<2", "empty clause"),
            ("six,>=1.0", "unexpected"),
            ("six=1.0", "does not start with a comparison operator"),
            ("six=>1.0", "does not start with a comparison operator"),
            ("six>=1.0,2.0", "does not start with a comparison operator"),
            ("six<>1.0", "not a PEP 440 version"),
            ("six>=1.0>2", "not a PEP 440 version"),
            ("six==1.0.", "not a PEP 440 version"),
            ("six==1..0", "not a PEP 440 version"),
            ("six==.1", "not a PEP 440 version"),
            ("six==v1.0", "not a PEP 440 version"),
            ("six==1.0-1", "not a PEP 440 version"),
            ("six==1.0a", "not a PEP 440 version"),
            ("six==1.0rc", "not a PEP 440 version"),
            ("six==1.0.post", "not a PEP 440 version"),
            ("six==1.0.dev", "not a PEP 440 version"),
            ("six==1.0+", "not a PEP 440 version"),
            ("six==1.0+cpu.", "not a PEP 440 version"),
            ("six==1.0+c_u", "not a PEP 440 version"),
            ("six==1!", "not a PEP 440 version"),
            ("six==1.0 2", "not a PEP 440 version"),
            ("six==latest", "not a PEP 440 version"),
            ("six===-x", "not a version"),
            ("six===1.0*", "not a version"),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw:?}: {message}");
        }
    }

    #[test]
    fn pep_440_versions_are_accepted_in_their_normalized_spelling() {
        for raw in [
            "six==1",
            "six==1!2.0",
            "six==2024.10.31",
            "six==1.0a1",
            "six==1.0b2",
            "six==1.0rc1",
            "six==1.0.post1",
            "six==1.0.dev0",
            "six==1.0b2.post3.dev4",
            "six==1.0rc1.dev2",
            "six==1.0+ubuntu.1",
            "six!=1.0+CPU",
            "six===1.0-legacy",
            "six===foobar",
            "six~=1.4.5a1",
            "six>=1.0.post1,<2.0.dev0",
        ] {
            assert!(
                Requirement::parse(raw).is_ok(),
                "{raw:?}: {:?}",
                Requirement::parse(raw)
            );
        }
    }

    #[test]
    fn a_local_version_label_is_only_allowed_with_exact_comparisons() {
        for raw in ["six==1.0+cpu", "six!=1.0+cpu", "six===1.0+cpu"] {
            assert!(Requirement::parse(raw).is_ok(), "{raw:?}");
        }
        for raw in ["six>=1.0+cpu", "six<1.0+cpu", "six~=1.0+cpu", "six>1+x"] {
            let message = refused(raw);
            assert!(
                message.contains("local version label"),
                "{raw:?}: {message}"
            );
        }
    }

    #[test]
    fn a_wildcard_only_follows_a_release_after_equality_operators() {
        for raw in ["pkg!=1.*", "pkg==1.2.*", "pkg==1!2.*"] {
            assert!(Requirement::parse(raw).is_ok(), "{raw:?}");
        }
        for raw in ["pkg>=1.*", "pkg~=1.2.*", "pkg<1.*"] {
            let message = refused(raw);
            assert!(
                message.contains("only == and != allow"),
                "{raw:?}: {message}"
            );
        }
        for raw in [
            "pkg==1.0rc1.*",
            "pkg==1.0+cpu.*",
            "pkg==.*",
            "pkg==1.0.post1.*",
        ] {
            let message = refused(raw);
            assert!(message.contains("not a release"), "{raw:?}: {message}");
        }
        for raw in ["pkg==1.*.1", "pkg==*", "pkg==1*"] {
            assert!(refused(raw).contains("not a PEP 440 version"), "{raw:?}");
        }
    }

    #[test]
    fn a_compatible_release_needs_two_release_numbers() {
        assert!(Requirement::parse("numpy~=1.26").is_ok());
        assert!(Requirement::parse("numpy~=1!1.26").is_ok());
        for raw in ["numpy~=1", "numpy~=1a1", "numpy~=2!1"] {
            let message = refused(raw);
            assert!(
                message.contains("at least two numbers"),
                "{raw:?}: {message}"
            );
        }
    }

    #[test]
    fn markers_follow_pep_508s_grammar() {
        for raw in [
            "six; python_version < \"3.11\"",
            "six;python_version<'3.11'",
            "six; sys_platform == 'linux' and (python_version >= \"3.9\" or \
             implementation_name != \"pypy\")",
            "six; \"linux\" in sys_platform",
            "six; platform_machine not in 'arm64 aarch64'",
            "six; ((os_name == 'posix'))",
            "six; python_full_version === '3.11.0'",
            "six; extra == 'socks'",
        ] {
            assert!(
                Requirement::parse(raw).is_ok(),
                "{raw:?}: {:?}",
                Requirement::parse(raw)
            );
        }
        for (raw, why) in [
            ("six;", "nothing follows ';'"),
            ("six ;  ", "nothing follows ';'"),
            (
                "six; python_version < 3.11",
                "unknown marker variable \"3.11\"",
            ),
            ("six; python_version <", "found the end"),
            ("six; python_version", "found the end"),
            ("six; python_version < \"3.11", "is not closed"),
            (
                "six; python_version << \"3\"",
                "is not a comparison operator",
            ),
            (
                "six; python_version = \"3\"",
                "is not a comparison operator",
            ),
            ("six; python_version < \"3\" and", "found the end"),
            (
                "six; python_version < \"3\" os_name == 'nt'",
                "after a complete marker",
            ),
            ("six; (python_version < \"3\"", "expected ')'"),
            ("six; python_version < \"3\")", "after a complete marker"),
            ("six; foo == \"1\"", "unknown marker variable \"foo\""),
            ("six; os_name not 'nt'", "'not' must be followed by 'in'"),
            ("six; and == 'x'", "found 'and'"),
            ("six; os_name == \"a;b\"", "may hold only"),
            ("six; os_name == \"$(id)\"", "shell metacharacters"),
            ("six; os_name == \"a\\b\"", "may hold only"),
            ("six; os_name == 'a,b'", "may hold only"),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw:?}: {message}");
        }
    }

    #[test]
    fn overlong_names_and_requirements_are_refused() {
        let longest = "a".repeat(MAX_NAME_CHARS);
        assert!(Requirement::parse(&longest).is_ok());
        assert!(refused(&format!("{longest}b")).contains("at most 200 characters"));
        assert!(refused(&format!("six[{longest}b]")).contains("at most 200 characters"));
        let long = format!("six>={}", "1.".repeat(MAX_REQUIREMENT_CHARS / 2));
        assert!(refused(&long).contains("at most 500 characters"));
    }

    #[test]
    fn names_normalize_per_pep_503() {
        let normalized = |raw: &str| Requirement::parse(raw).unwrap().normalized_name();
        assert_eq!(normalized("Foo.Bar_baz"), "foo-bar-baz");
        assert_eq!(normalized("foo__bar-._baz==1.0"), "foo-bar-baz");
        assert_eq!(normalized("SIX"), "six");
        assert_eq!(normalized("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("Typing_Extensions"), "typing-extensions");
        assert_eq!(
            Requirement::parse("Foo.Bar_baz").unwrap().name(),
            "Foo.Bar_baz"
        );
    }

    #[test]
    fn with_version_pins_the_package_and_keeps_its_extras() {
        let r =
            Requirement::parse("requests[security]>=2.0,<3; python_version >= \"3.9\"").unwrap();
        let pinned = r.with_version("2.31.0").unwrap();
        assert_eq!(pinned.to_arg(), "requests[security]==2.31.0");
        assert_eq!(pinned.specifier(), Some("==2.31.0"));
        assert_eq!(pinned.marker(), None);
        assert_eq!(Requirement::parse(&pinned.to_arg()).unwrap(), pinned);
        for version in ["1!2.0", "2.0rc1", "2.0.post1.dev2", "2.1.0+cpu"] {
            assert!(r.with_version(version).is_ok(), "{version:?}");
        }
    }

    #[test]
    fn with_version_refuses_what_is_not_a_pep_440_version() {
        let r = Requirement::parse("six").unwrap();
        for version in [
            "",
            " 1.0",
            "1.0 ",
            "latest",
            "1.*",
            ">=1.0",
            "==1.0",
            "1.0; rm -rf /",
            "1.0\n",
            "-e",
            "v1.0",
        ] {
            let err = r.with_version(version).unwrap_err();
            assert_eq!(err.field, "to_version", "{version:?}");
        }
        let long = "1.".repeat(MAX_REQUIREMENT_CHARS) + "0";
        assert!(
            r.with_version(&long)
                .unwrap_err()
                .message
                .contains("at most 500")
        );
    }

    #[test]
    fn a_requirement_serializes_as_its_argument_and_deserializes_through_parse() {
        let r = Requirement::parse("Django (>=4.2); python_version >= '3.10'").unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json, "Django>=4.2; python_version >= '3.10'");
        assert_eq!(serde_json::from_value::<Requirement>(json).unwrap(), r);
        let err = serde_json::from_value::<Requirement>(serde_json::json!("-e .")).unwrap_err();
        assert!(err.to_string().contains("pip options"), "{err}");
        assert!(serde_json::from_value::<Requirement>(serde_json::json!(7)).is_err());
    }

    #[test]
    fn parse_list_reports_every_bad_entry_at_once() {
        let raw = strings(&["six", "", "-e .", "idna==3.7", "$(whoami)", "six\n"]);
        let errors = parse_list("packages", &raw, 10).unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(errors.iter().all(|e| e.field == "packages"));
        assert!(
            messages[0].starts_with("packages[1] \"\" is not a package requirement: "),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].starts_with("packages[2] \"-e .\" is not a package requirement: pip"),
            "{}",
            messages[1]
        );
        assert!(
            messages[2].starts_with("packages[4] \"$(whoami)\" is not"),
            "{}",
            messages[2]
        );
        assert!(
            messages[3].starts_with("packages[5] \"six\\n\" is not"),
            "{}",
            messages[3]
        );
    }

    #[test]
    fn parse_list_refuses_two_entries_for_the_same_package() {
        let raw = strings(&[
            "Six",
            "requests",
            "six==1.16",
            "Zope.Interface",
            "zope_interface",
        ]);
        let errors = parse_list("packages", &raw, 10).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0]
                .message
                .starts_with("packages[2] \"six==1.16\" names the same package")
        );
        assert!(
            errors[0].message.contains("as packages[0] \"Six\""),
            "{}",
            errors[0].message
        );
        assert!(
            errors[1].message.contains("packages[4]"),
            "{}",
            errors[1].message
        );
        assert!(
            errors[1].message.contains("packages[3]"),
            "{}",
            errors[1].message
        );
    }

    #[test]
    fn parse_list_keeps_the_requirements_in_order() {
        let raw = strings(&["six", "requests[socks]>=2", "Django (>=4.2)"]);
        let parsed = parse_list("packages", &raw, 3).unwrap();
        let args: Vec<String> = parsed.iter().map(Requirement::to_arg).collect();
        assert_eq!(args, ["six", "requests[socks]>=2", "Django>=4.2"]);
        assert!(parse_list("packages", &[], 3).unwrap().is_empty());
    }

    #[test]
    fn parse_list_refuses_more_than_max_entries() {
        let raw = strings(&["a", "b", "c"]);
        let errors = parse_list("dependencies", &raw, 2).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "dependencies");
        assert!(
            errors[0].message.contains("at most 2"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_long_or_hostile_value_is_shown_escaped_and_cut_in_messages() {
        let long = format!("-{}", "x".repeat(100));
        let raw = strings(&[long.as_str(), "six\u{202e}\"x"]);
        let errors = parse_list("packages", &raw, 2).unwrap_err();
        assert!(
            errors[0]
                .message
                .contains(&format!("\"-{}…\"", "x".repeat(59)))
        );
        assert!(
            errors[1]
                .message
                .starts_with("packages[1] \"six\\u{202e}\\\"x\" is not"),
            "{}",
            errors[1].message
        );
    }

    #[test]
    fn parse_name_accepts_a_bare_package_name_only() {
        for raw in [
            "six",
            "Zope.Interface",
            "foo_bar-baz",
            "a",
            &"a".repeat(200),
        ] {
            assert_eq!(parse_name(raw).unwrap(), raw);
        }
        for raw in [
            "",
            " six",
            "six==1.0",
            "six[socks]",
            "six; os_name == 'nt'",
            "../x",
            "-e",
            "a b",
            "six-",
            ".six",
            "s\u{456}x",
            &"a".repeat(201),
        ] {
            assert_eq!(
                parse_name(raw).unwrap_err().field,
                "package_name",
                "{raw:?}"
            );
        }
    }
}

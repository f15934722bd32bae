//! Channels: what a live client asks to receive.
//!
//! | channel | receives |
//! |---|---|
//! | `*` (or `all`) | every event of the organization |
//! | `stream:<name>` | one stream's events |
//! | `category:<name>` | one category's events (`category:build`) |
//! | `type:<name>` | one event type, as stored (`type:BuildStarted`) or as sent (`type:build:started`) |
//! | `<resource>:<id>` (or `<resource>_<id>`) | one resource and what belongs to it: `project:<id>` gets the project's events and its builds' |
//! | `<resources>` (a bare plural or singular word) | a category (`builds`, `project`); Sentinel's `events` is `detection` |
//!
//! The seeds' message forms map onto these: GestVenv's `{type:"subscribe", environment_id}` is
//! `environment:<id>`, Sentinel's `{type:"subscribe", channels:["camera_1", "events"]}` is
//! `camera:1` and `category:detection`.

use std::collections::BTreeSet;
use std::fmt;

use super::feed::{FeedEvent, category_named};

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 300;

/// One subscription of a client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// Every event of the organization.
    All,
    /// One stream.
    Stream(String),
    /// One stream category.
    Category(String),
    /// One event type (stored name or `<resource>:<verb>`).
    Type(String),
    /// One resource and its children.
    Resource {
        /// Its category (`project`).
        category: String,
        /// Its id.
        id: String,
    },
}

/// Why a channel name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel {name:?}: {reason}")]
pub struct InvalidChannel {
    /// The name, cut to [`MAX_CHANNEL_LEN`].
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

fn is_word(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Plural and seed names of categories.
fn category_of_word(word: &str) -> String {
    match word {
        // Sentinel's detection events channel.
        "events" => "detection".to_owned(),
        w => w
            .strip_suffix('s')
            .filter(|s| !s.is_empty())
            .unwrap_or(w)
            .to_owned(),
    }
}

impl Channel {
    /// Reads a channel name.
    pub fn parse(name: &str) -> Result<Self, InvalidChannel> {
        let invalid = |reason| InvalidChannel {
            name: name.chars().take(MAX_CHANNEL_LEN).collect(),
            reason,
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("a channel name must not be empty"));
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(invalid("a channel name must be at most 300 bytes"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("a channel name must not contain spaces"));
        }
        if name == "*" || name == "all" {
            return Ok(Channel::All);
        }
        if let Some((prefix, rest)) = name.split_once(':') {
            if rest.is_empty() {
                return Err(invalid("nothing follows the `:`"));
            }
            return Ok(match prefix {
                "stream" => Channel::Stream(rest.to_owned()),
                "category" if is_word(rest) => Channel::Category(rest.to_owned()),
                "category" => {
                    return Err(invalid(
                        "a category is lowercase letters and digits, starting with a letter",
                    ));
                }
                "type" | "event_type" => Channel::Type(rest.to_owned()),
                p if is_word(p) => Channel::Resource {
                    category: p.to_owned(),
                    id: rest.to_owned(),
                },
                _ => {
                    return Err(invalid(
                        "expected `*`, `stream:…`, `category:…`, `type:…` or `<resource>:<id>`",
                    ));
                }
            });
        }
        if let Some((prefix, id)) = name.split_once('_')
            && is_word(prefix)
            && !id.is_empty()
        {
            return Ok(Channel::Resource {
                category: prefix.to_owned(),
                id: id.to_owned(),
            });
        }
        if is_word(name) {
            return Ok(Channel::Category(category_of_word(name)));
        }
        Err(invalid(
            "expected `*`, `stream:…`, `category:…`, `type:…` or `<resource>:<id>`",
        ))
    }

    /// Whether this event is on this channel.
    pub fn matches(&self, event: &FeedEvent) -> bool {
        let record = &event.record;
        match self {
            Channel::All => true,
            Channel::Stream(s) => record.stream.as_str() == s,
            Channel::Category(c) => record.stream.category() == category_named(c),
            Channel::Type(t) => &record.event_type == t || &event.kind == t,
            Channel::Resource { category, id } => event.concerns(category_named(category), id),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::All => f.write_str("*"),
            Channel::Stream(s) => write!(f, "stream:{s}"),
            Channel::Category(c) => write!(f, "category:{c}"),
            Channel::Type(t) => write!(f, "type:{t}"),
            Channel::Resource { category, id } => write!(f, "{category}:{id}"),
        }
    }
}

/// A client's channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channels(BTreeSet<Channel>);

impl Channels {
    /// No channel: nothing is received.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds these.
    pub fn add(&mut self, channels: impl IntoIterator<Item = Channel>) {
        self.0.extend(channels);
    }

    /// Removes these.
    pub fn remove(&mut self, channels: &[Channel]) {
        for c in channels {
            self.0.remove(c);
        }
    }

    /// Whether the event is on one of them.
    pub fn matches(&self, event: &FeedEvent) -> bool {
        self.0.iter().any(|c| c.matches(event))
    }

    /// Their names.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// The ids of the resources of this category they name one by one (`camera:<id>`).
    pub fn resources<'a>(&'a self, category: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter_map(move |c| match c {
            Channel::Resource { category: c, id } if c == category => Some(id.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn resource(category: &str, id: &str) -> Channel {
        Channel::Resource {
            category: category.to_owned(),
            id: id.to_owned(),
        }
    }

    #[test]
    fn every_documented_channel_form_parses_to_its_channel() {
        assert_eq!(parse("*"), Channel::All);
        assert_eq!(parse("all"), Channel::All);
        assert_eq!(
            parse("stream:project-1"),
            Channel::Stream("project-1".into())
        );
        assert_eq!(parse("category:build"), Channel::Category("build".into()));
        assert_eq!(
            parse("type:BuildStarted"),
            Channel::Type("BuildStarted".into())
        );
        assert_eq!(
            parse("type:build:started"),
            Channel::Type("build:started".into())
        );
        assert_eq!(parse("project:abc"), resource("project", "abc"));
        assert_eq!(parse("camera_1"), resource("camera", "1"));
        assert_eq!(parse("builds"), Channel::Category("build".into()));
        assert_eq!(parse("events"), Channel::Category("detection".into()));
    }

    #[test]
    fn a_channel_prints_as_the_name_that_parses_back_to_it() {
        for name in [
            "*",
            "stream:a-b",
            "category:build",
            "type:BuildStarted",
            "project:x",
        ] {
            assert_eq!(parse(name).to_string(), name);
            assert_eq!(parse(&parse(name).to_string()), parse(name));
        }
    }

    #[test]
    fn malformed_channels_are_refused_with_a_reason() {
        for bad in [
            "",
            " ",
            "a b",
            "project:",
            "Category:x",
            "category:Build",
            "-x",
            &"x".repeat(301),
        ] {
            let e = Channel::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad:?}");
        }
    }
}

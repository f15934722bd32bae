//! A stack's container configuration (a Compose file): read from text, checked against the
//! Compose Specification, then read again by a reviewer.
//!
//! Three steps, each a pure function:
//!
//! 1. [`parse`] turns YAML or JSON text (JSON is YAML) into a JSON mapping, refusing before any
//!    other work what must not be worked on: more than [`MAX_CONFIGURATION_BYTES`], several
//!    documents, a root that is not a mapping, and documents whose anchors and aliases expand
//!    beyond [`MAX_NODES`] nodes (YAML bombs) or nest deeper than [`MAX_DEPTH`].
//! 2. [`validate`] checks the mapping against the specification's model (rule `spec`) and then
//!    makes a reviewer's checks (the other rules, listed at [`rules`]).
//! 3. [`to_yaml`] writes a configuration back as YAML, for answers and diffs.
//!
//! # The specification's model: `compose_spec`
//!
//! Two maintained crates model the Compose Specification: `compose_spec` and
//! `docker-compose-types`. Both refuse unknown keys (top level and services: only `x-`
//! extensions are allowed beside the specification's keys) and both take long and short
//! syntaxes. `compose_spec` keeps closer to the specification, so it is the one used here:
//!
//! - it parses values, not only shapes: ports (`[ip:][host:]container[/protocol]`, ranges),
//!   image references, durations, byte sizes, identifiers, absolute paths, `network_mode`
//!   against `networks` — where `docker-compose-types` holds most of them as free strings;
//! - it covers more of the service keys (`attach`, `develop`, `annotations`, `storage_opt`,
//!   `cgroup`, … which `docker-compose-types` 0.24 refuses as unknown);
//! - its types are deserialized from any self-describing serde format, so it takes a
//!   `serde_json::Value` and stays a pure function.
//!
//! Its YAML library is `serde_yaml` 0.9 (deprecated); it is used here only as the type of
//! extension values: no text is ever parsed with it. Text is parsed by [`parse`] with
//! `saphyr-parser` (a maintained YAML 1.2 event parser) into a tree built here, which counts
//! every node an alias expands to, so that the billion laughs is refused after at most
//! [`MAX_NODES`] nodes instead of after a billion. Paths of the crate's errors come from
//! `serde_path_to_error`.
//!
//! Where `compose_spec` 0.3 refuses what Compose accepts, the service is adjusted before its
//! check (see `for_the_model`): keys newer than the crate (`gpus`, `models`, `post_start`,
//! `pre_stop`, `provider`, `label_file`, `use_api_socket`) are not checked, a bind mount from
//! `~/…`, `restart: on-failure:3` and `extra_hosts`' `host-gateway` are accepted. Interpolation (`${VAR}`) happens after parsing in
//! Compose: the spec check and the reviewer's checks first put each `${VAR:-default}` or
//! `${VAR-default}` default in place, and the spec check does not judge values that still hold
//! a `$` (their value is only known where the file is deployed).

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest configuration accepted, in bytes (refused before any parsing).
pub const MAX_CONFIGURATION_BYTES: usize = 256 * 1024;

/// Most nodes a document may hold once every alias is expanded (each anchor's copy counts too).
/// A plain document under [`MAX_CONFIGURATION_BYTES`] holds at most half as many.
pub const MAX_NODES: usize = 250_000;

/// Deepest nesting of mappings and sequences accepted (Compose files are a few levels deep).
pub const MAX_DEPTH: usize = 64;

/// The rules a [`Finding`] may name, each a stable code.
///
/// Errors (a configuration with any is not valid):
/// - `spec`: what the Compose Specification forbids (unknown keys, wrong types or formats);
/// - `no_image`: a service with neither `image` nor `build` (nor `extends`);
/// - `port_twice`: a host port published twice, by one service or two (same protocol,
///   overlapping port ranges, the same or an unspecified host address);
/// - `unknown_dependency`: `depends_on` names a service the file does not define;
/// - `dependency_cycle`: services that depend on each other in a cycle (listed in order);
/// - `undefined_volume`, `undefined_network`, `undefined_secret`, `undefined_config`: a service
///   uses a named volume, network (`default` is implicit), secret or config that the file does
///   not declare at its top level.
///
/// Warnings:
/// - `latest_tag`, `no_tag`: an image pulled by the `latest` tag or by no tag (a digest pins it;
///   a service that also has `build` names its own image and is not warned about);
/// - `privileged`: `privileged: true`;
/// - `plain_secret`: a secret-looking variable (PASSWORD, SECRET, TOKEN, KEY, …) with a literal
///   value instead of an interpolation, or a URL with a password in it, in `environment`;
/// - `host_namespace`: `network_mode`, `pid` or `ipc` set to `host`;
/// - `docker_socket`: the Docker socket mounted into a container;
/// - `dangerous_capability`: `cap_add` of `ALL` or `SYS_ADMIN`;
/// - `obsolete_version`: the top-level `version`, which the specification ignores;
/// - `ports_unchecked`: more host ports than [`MAX_CHECKED_PORTS`] (ranges count each port):
///   the rest are not checked for clashes.
pub mod rules {
    pub const SPEC: &str = "spec";
    pub const NO_IMAGE: &str = "no_image";
    pub const PORT_TWICE: &str = "port_twice";
    pub const UNKNOWN_DEPENDENCY: &str = "unknown_dependency";
    pub const DEPENDENCY_CYCLE: &str = "dependency_cycle";
    pub const UNDEFINED_VOLUME: &str = "undefined_volume";
    pub const UNDEFINED_NETWORK: &str = "undefined_network";
    pub const UNDEFINED_SECRET: &str = "undefined_secret";
    pub const UNDEFINED_CONFIG: &str = "undefined_config";
    pub const LATEST_TAG: &str = "latest_tag";
    pub const NO_TAG: &str = "no_tag";
    pub const PRIVILEGED: &str = "privileged";
    pub const PLAIN_SECRET: &str = "plain_secret";
    pub const HOST_NAMESPACE: &str = "host_namespace";
    pub const DOCKER_SOCKET: &str = "docker_socket";
    pub const DANGEROUS_CAPABILITY: &str = "dangerous_capability";
    pub const OBSOLETE_VERSION: &str = "obsolete_version";
    pub const PORTS_UNCHECKED: &str = "ports_unchecked";
}

/// One problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Where in the document: a path like `services.web.ports[1]` (`` for the root); a key
    /// that is not a plain word is written `["my.key"]`.
    pub path: String,
    /// A stable short code, one of [`rules`].
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Finding {
    fn new(path: impl Into<String>, rule: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            rule: rule.to_owned(),
            message: message.into(),
        }
    }
}

/// What [`validate`] found: `valid` is `errors.is_empty()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub valid: bool,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Report {
    fn new(errors: Vec<Finding>, warnings: Vec<Finding>) -> Self {
        Self {
            valid: errors.is_empty(),
            errors,
            warnings,
        }
    }
}

/// Why a text is refused before validation (size, YAML bomb, not a mapping, not YAML/JSON).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", path, if path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// Where the text was refused (`` for the root or the whole text).
    pub path: String,
    /// Why, for a person.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses YAML or JSON text into a JSON mapping.
///
/// Refuses, with the path where it stopped: text over [`MAX_CONFIGURATION_BYTES`] (before
/// reading it), text that is not YAML, several documents, a root that is not a mapping,
/// documents over [`MAX_NODES`] nodes once aliases are expanded or deeper than [`MAX_DEPTH`],
/// a key given twice, a key that is a mapping or a sequence, an alias before its anchor, and
/// tags other than the core schema's (`!!str`, `!!int`, …). Plain scalars are read with the
/// YAML 1.2 core schema (`yes` is a string, `1.5` a number); `.inf` and `.nan`, which JSON
/// cannot hold, stay strings. Merge keys (`<<: *defaults`) are applied, the mapping's own keys
/// winning.
pub fn parse(text: &str) -> Result<Value, ConfigError> {
    if text.len() > MAX_CONFIGURATION_BYTES {
        return Err(ConfigError::new(
            "",
            format!(
                "the configuration is {} bytes, more than the {MAX_CONFIGURATION_BYTES} accepted",
                text.len()
            ),
        ));
    }
    let mut tree = Tree::default();
    let mut documents = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| {
            ConfigError::new(
                tree.path(),
                format!(
                    "not YAML or JSON: {} at line {} column {}",
                    error.info(),
                    error.marker().line(),
                    error.marker().col() + 1
                ),
            )
        })?;
        if let Event::DocumentStart(_) = event {
            documents += 1;
            if documents > 1 {
                return Err(ConfigError::new(
                    "",
                    format!(
                        "several YAML documents (another starts at line {}): a configuration is one document",
                        span.start.line()
                    ),
                ));
            }
        }
        tree.take(event)?;
    }
    match tree.root {
        Some(Value::Object(map)) => Ok(Value::Object(map)),
        Some(other) => Err(ConfigError::new(
            "",
            format!(
                "the configuration must be a mapping at its root, not {}",
                kind(&other)
            ),
        )),
        None => Err(ConfigError::new(
            "",
            "the configuration is empty: it must be a mapping",
        )),
    }
}

/// `parse` then `validate`; a parse error is a report with one error of rule `spec`.
pub fn validate_text(text: &str) -> Report {
    match parse(text) {
        Ok(config) => validate(&config),
        Err(error) => Report::new(
            vec![Finding::new(error.path, rules::SPEC, error.message)],
            Vec::new(),
        ),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing: YAML events into a JSON tree, every node counted.

/// A mapping's pending key.
enum Key {
    Name(String),
    /// `<<`: the value is merged into the mapping.
    Merge,
}

enum Container {
    Sequence(Vec<Value>),
    Mapping {
        entries: Map<String, Value>,
        merges: Vec<Map<String, Value>>,
        key: Option<Key>,
    },
}

struct Frame {
    container: Container,
    anchor: usize,
    /// The height of its tallest child.
    height: usize,
    /// `Tree::built` when the node started.
    built_before: usize,
}

struct Anchored {
    value: Value,
    height: usize,
    nodes: usize,
}

#[derive(Default)]
struct Tree {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    /// Nodes in the tree, aliases expanded.
    built: usize,
    /// `built` plus each anchor's copy: what the budget is counted on.
    charged: usize,
    root: Option<Value>,
}

impl Tree {
    /// The path of the node being read.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match &frame.container {
                Container::Sequence(items) => push_index(&mut path, items.len()),
                Container::Mapping { key, .. } => match key {
                    Some(Key::Name(name)) => push_key(&mut path, name),
                    Some(Key::Merge) => push_key(&mut path, "<<"),
                    None => {}
                },
            }
        }
        path
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path(), message)
    }

    fn charge(&mut self, nodes: usize) -> Result<(), ConfigError> {
        self.charged = self.charged.saturating_add(nodes);
        if self.charged > MAX_NODES {
            return Err(self.error(format!(
                "the document expands to more than {MAX_NODES} nodes through its anchors and aliases (a YAML bomb?)"
            )));
        }
        Ok(())
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                container: Container::Mapping { key: None, .. },
                ..
            })
        )
    }

    fn set_key(&mut self, new: Key) {
        if let Some(Frame {
            container: Container::Mapping { key, .. },
            ..
        }) = self.stack.last_mut()
        {
            *key = Some(new);
        }
    }

    fn take(&mut self, event: Event<'_>) -> Result<(), ConfigError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(1)?;
                if self.expects_key() {
                    if let Some(tag) = tag.as_deref()
                        && resolve(&text, style, Some(tag)).is_err()
                    {
                        return Err(self.error(format!("the tag {tag} is not supported")));
                    }
                    if anchor > 0 {
                        self.remember(anchor, Value::String(text.to_string()), 1, 1)?;
                    }
                    let key = if style == ScalarStyle::Plain && tag.is_none() && text == "<<" {
                        Key::Merge
                    } else {
                        Key::Name(text.into_owned())
                    };
                    self.set_key(key);
                    return Ok(());
                }
                let value = resolve(&text, style, tag.as_deref()).map_err(|m| self.error(m))?;
                self.built += 1;
                if anchor > 0 {
                    self.remember(anchor, value.clone(), 1, 1)?;
                }
                self.place(value, 1)
            }
            Event::SequenceStart(anchor, tag) => self.open(
                anchor,
                tag.as_deref(),
                "seq",
                Container::Sequence(Vec::new()),
            ),
            Event::MappingStart(anchor, tag) => self.open(
                anchor,
                tag.as_deref(),
                "map",
                Container::Mapping {
                    entries: Map::new(),
                    merges: Vec::new(),
                    key: None,
                },
            ),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(anchor) => {
                let Some(anchored) = self.anchors.get(&anchor) else {
                    return Err(self.error("an alias refers to no anchor defined before it"));
                };
                if self.expects_key() {
                    let key = match &anchored.value {
                        Value::String(text) => text.clone(),
                        Value::Bool(_) | Value::Number(_) | Value::Null => {
                            anchored.value.to_string()
                        }
                        _ => {
                            return Err(self.error(
                                "a key must be a plain value, not a mapping or a sequence",
                            ));
                        }
                    };
                    self.charge(1)?;
                    self.set_key(Key::Name(key));
                    return Ok(());
                }
                let (height, nodes) = (anchored.height, anchored.nodes);
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
                }
                self.charge(nodes)?;
                self.built += nodes;
                let value = self.anchors[&anchor].value.clone();
                self.place(value, height)
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => Ok(()),
        }
    }

    fn open(
        &mut self,
        anchor: usize,
        tag: Option<&Tag>,
        core: &str,
        container: Container,
    ) -> Result<(), ConfigError> {
        if self.expects_key() {
            return Err(self.error("a key must be a plain value, not a mapping or a sequence"));
        }
        if let Some(tag) = tag
            && !(tag.is_yaml_core_schema() && tag.suffix == core)
        {
            return Err(self.error(format!("the tag {tag} is not supported")));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.charge(1)?;
        let built_before = self.built;
        self.built += 1;
        self.stack.push(Frame {
            container,
            anchor,
            height: 0,
            built_before,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConfigError> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.error("a collection ends that never started"));
        };
        let value = match frame.container {
            Container::Sequence(items) => Value::Array(items),
            Container::Mapping {
                mut entries,
                merges,
                ..
            } => {
                for merged in merges {
                    for (key, value) in merged {
                        entries.entry(key).or_insert(value);
                    }
                }
                Value::Object(entries)
            }
        };
        let height = frame.height + 1;
        if frame.anchor > 0 {
            let nodes = self.built - frame.built_before;
            self.remember(frame.anchor, value.clone(), height, nodes)?;
        }
        self.place(value, height)
    }

    fn remember(
        &mut self,
        anchor: usize,
        value: Value,
        height: usize,
        nodes: usize,
    ) -> Result<(), ConfigError> {
        self.charge(nodes)?;
        self.anchors.insert(
            anchor,
            Anchored {
                value,
                height,
                nodes,
            },
        );
        Ok(())
    }

    /// Puts a finished node where it belongs: the root, a sequence's next item, a mapping's value.
    fn place(&mut self, value: Value, height: usize) -> Result<(), ConfigError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        frame.height = frame.height.max(height);
        let refused = match &mut frame.container {
            Container::Sequence(items) => {
                items.push(value);
                None
            }
            Container::Mapping {
                entries,
                merges,
                key,
            } => match key.take() {
                Some(Key::Name(name)) if entries.contains_key(&name) => {
                    *key = Some(Key::Name(name));
                    Some("this key is given twice in its mapping")
                }
                Some(Key::Name(name)) => {
                    entries.insert(name, value);
                    None
                }
                Some(Key::Merge) => match value {
                    Value::Object(map) => {
                        merges.push(map);
                        None
                    }
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        merges.extend(items.into_iter().filter_map(|item| match item {
                            Value::Object(map) => Some(map),
                            _ => None,
                        }));
                        None
                    }
                    _ => {
                        *key = Some(Key::Merge);
                        Some("`<<` merges a mapping or a sequence of mappings")
                    }
                },
                None => Some("a key must be a plain value, not a mapping or a sequence"),
            },
        };
        match refused {
            Some(message) => Err(self.error(message)),
            None => Ok(()),
        }
    }
}

/// A scalar's value: the YAML 1.2 core schema for plain scalars, strings for quoted ones.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            plain(text)
        } else {
            Value::String(text.to_owned())
        });
    };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Value::String(text.to_owned()));
    }
    if !tag.is_yaml_core_schema() {
        return Err(format!("the tag {tag} is not supported"));
    }
    let value = plain(text);
    let fits = match tag.suffix.as_str() {
        "str" => return Ok(Value::String(text.to_owned())),
        "null" => value.is_null(),
        "bool" => value.is_boolean(),
        "int" => value.is_i64() || value.is_u64(),
        "float" => value.is_number(),
        _ => return Err(format!("the tag {tag} is not supported")),
    };
    if fits {
        Ok(value)
    } else {
        Err(format!("`{text}` is not a valid {tag}"))
    }
}

/// A plain scalar under the core schema.
fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(number) = integer(text) {
        return Value::Number(number);
    }
    if is_float(text)
        && let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
    {
        return Value::Number(number);
    }
    Value::String(text.to_owned())
}

fn integer(text: &str) -> Option<serde_json::Number> {
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok().map(Into::into);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Into::into);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    text.parse::<i64>()
        .map(Into::into)
        .ok()
        .or_else(|| text.parse::<u64>().ok().map(Into::into))
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(text: &str) -> bool {
    let text = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------------------------
// Paths.

fn is_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn push_key(path: &mut String, key: &str) {
    if is_word(key) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::String(key.to_owned()).to_string());
        path.push(']');
    }
}

fn push_index(path: &mut String, index: usize) {
    path.push('[');
    path.push_str(&index.to_string());
    path.push(']');
}

fn key(path: &str, key: &str) -> String {
    let mut path = path.to_owned();
    push_key(&mut path, key);
    path
}

fn index(path: &str, index: usize) -> String {
    let mut path = path.to_owned();
    push_index(&mut path, index);
    path
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Validates a configuration (a JSON mapping) against the Compose Specification's model and a
/// reviewer's checks (see [`rules`]). Pure and deterministic.
///
/// The specification's findings come first (at most one for the top level and one per service:
/// the model stops at a part's first problem), then the reviewer's, in the order of the
/// configuration's keys as the `serde_json` mapping holds them, service by service.
pub fn validate(config: &Value) -> Report {
    let Some(raw) = config.as_object() else {
        return Report::new(
            vec![Finding::new(
                "",
                rules::SPEC,
                format!(
                    "the configuration must be a mapping at its root, not {}",
                    kind(config)
                ),
            )],
            Vec::new(),
        );
    };
    let resolved = with_defaults(config);
    let mut errors = spec_findings(&resolved);
    let mut warnings = Vec::new();
    if let Value::Object(resolved) = &resolved {
        Review::new(raw, resolved, &mut errors, &mut warnings).run();
    }
    Report::new(errors, warnings)
}

/// Keys of recent versions of the specification that `compose_spec` 0.3 does not know.
const NEWER_SERVICE_KEYS: &[&str] = &[
    "gpus",
    "label_file",
    "models",
    "post_start",
    "pre_stop",
    "provider",
    "use_api_socket",
];
const NEWER_TOP_LEVEL_KEYS: &[&str] = &["models"];

/// What the specification's model refuses, with its path.
fn spec_findings(config: &Value) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Value::Object(root) = config else {
        return findings;
    };
    // The top level, each service reduced to nothing: its own check follows.
    let mut top = Map::new();
    for (name, value) in root {
        if NEWER_TOP_LEVEL_KEYS.contains(&name.as_str()) {
            continue;
        }
        let value = match (name.as_str(), value) {
            ("services", Value::Object(services)) => Value::Object(
                services
                    .keys()
                    .map(|service| (service.clone(), Value::Object(Map::new())))
                    .collect(),
            ),
            // Ignored by the specification; `version: 3.8` is common and harmless.
            ("version", Value::Number(number)) => Value::String(number.to_string()),
            _ => value.clone(),
        };
        top.insert(name.clone(), value);
    }
    let top = Value::Object(top);
    if let Err(error) = serde_path_to_error::deserialize::<_, compose_spec::Compose>(&top) {
        findings.extend(spec_finding("", &top, &error));
    }
    if let Some(Value::Object(services)) = root.get("services") {
        for (name, service) in services {
            let mut service = service.clone();
            if let Value::Object(keys) = &mut service {
                for_the_model(keys);
            }
            if let Err(error) =
                serde_path_to_error::deserialize::<_, compose_spec::Service>(&service)
            {
                let prefix = key("services", name);
                findings.extend(spec_finding(&prefix, &service, &error));
            }
        }
    }
    findings
}

/// A service as `compose_spec` 0.3 takes it, where it is stricter than the specification or
/// than Compose: keys it does not know yet are taken out, a bind mount from `~` becomes an
/// absolute path, `restart: on-failure:N` (the specification's own syntax) loses its count,
/// and `extra_hosts`' `host-gateway` (Docker's name for the host) becomes an address.
fn for_the_model(service: &mut Map<String, Value>) {
    service.retain(|key, _| !NEWER_SERVICE_KEYS.contains(&key.as_str()));
    if let Some(Value::Array(mounts)) = service.get_mut("volumes") {
        for mount in mounts {
            if let Value::String(short) = mount
                && short.starts_with('~')
            {
                short.insert(0, '/');
            }
        }
    }
    if let Some(Value::String(restart)) = service.get_mut("restart")
        && let Some(count) = restart.strip_prefix("on-failure:")
        && count.parse::<u32>().is_ok()
    {
        *restart = "on-failure".to_owned();
    }
    let gateway = |host: &mut String| {
        if let Some(name) = host.strip_suffix("host-gateway") {
            *host = format!("{name}127.0.0.1");
        }
    };
    match service.get_mut("extra_hosts") {
        Some(Value::Array(hosts)) => hosts.iter_mut().for_each(|host| {
            if let Value::String(host) = host {
                gateway(host);
            }
        }),
        Some(Value::Object(hosts)) => hosts.values_mut().for_each(|host| {
            if let Value::String(host) = host {
                gateway(host);
            }
        }),
        _ => {}
    }
}

/// A model error as a finding, unless it is about a value still holding an interpolation.
fn spec_finding(
    prefix: &str,
    checked: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> Option<Finding> {
    use serde_path_to_error::Segment;
    let mut path = prefix.to_owned();
    let mut at = Some(checked);
    for segment in error.path() {
        match segment {
            Segment::Seq { index } => {
                push_index(&mut path, *index);
                at = at.and_then(|value| value.get(index));
            }
            Segment::Map { key } => {
                push_key(&mut path, key);
                at = at.and_then(|value| value.get(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    if at.is_some_and(interpolated) {
        return None;
    }
    let message = error.inner().to_string();
    // An unknown key reaches the model's flattened `x-` extensions: name the key.
    if let Some(rest) = message.strip_prefix("extension key `")
        && let Some((unknown, _)) = rest.split_once('`')
    {
        push_key(&mut path, unknown);
        return Some(Finding::new(
            path,
            rules::SPEC,
            format!(
                "`{unknown}` is not a key of the Compose Specification here (extensions start with `x-`)"
            ),
        ));
    }
    Some(Finding::new(path, rules::SPEC, message))
}

fn interpolated(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('$'),
        Value::Array(items) => items.iter().any(interpolated),
        Value::Object(map) => map.values().any(interpolated),
        _ => false,
    }
}

/// The configuration with each `${VAR:-default}` and `${VAR-default}` replaced by its default
/// (one level: a default holding another interpolation is kept as written). Linear in the text.
fn with_defaults(value: &Value) -> Value {
    match value {
        Value::String(text) if text.contains("${") => Value::String(substitute_defaults(text)),
        Value::Array(items) => Value::Array(items.iter().map(with_defaults).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), with_defaults(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_defaults(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = escaped;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        // The matching brace.
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            // No closing brace: what is left is kept as it is (and each character read once).
            out.push('$');
            rest = after;
            break;
        };
        let body = &inner[..end];
        let name_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let operator = &body[name_end..];
        let default = operator
            .strip_prefix(":-")
            .or_else(|| operator.strip_prefix('-'));
        match default {
            // A default that itself interpolates stays as it is: it still holds a `$`.
            Some(default) if name_end > 0 => out.push_str(default),
            _ => {
                out.push_str("${");
                out.push_str(body);
                out.push('}');
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A host port published by a service.
struct Published {
    /// `None`: every address.
    address: Option<String>,
    first: u16,
    last: u16,
    protocol: String,
    path: String,
}

impl Published {
    fn describe(&self) -> String {
        let ports = if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        };
        match &self.address {
            Some(address) => format!("{address}:{ports}/{}", self.protocol),
            None => format!("{ports}/{}", self.protocol),
        }
    }
}

/// Most host ports checked for clashes, each port of a range counting: past it, the file's
/// remaining ports are not checked (warning `ports_unchecked`), so that wide ranges cost
/// bounded work.
pub const MAX_CHECKED_PORTS: usize = 300_000;

/// The check stopped at [`MAX_CHECKED_PORTS`].
struct Exhausted;

/// Who published each host port first: exact, and linear in the ports published.
#[derive(Default)]
struct PortBook {
    /// Protocols and addresses, as numbers.
    names: HashMap<String, u32>,
    /// (protocol, port) → the first publisher, on any address.
    any: HashMap<(u32, u16), usize>,
    /// (protocol, port, address or [`EVERY_ADDRESS`]) → the first publisher there.
    exact: HashMap<(u32, u16, u32), usize>,
    paths: Vec<String>,
    checked: usize,
}

const EVERY_ADDRESS: u32 = u32::MAX;

impl PortBook {
    fn name(&mut self, name: &str) -> u32 {
        let next = u32::try_from(self.names.len()).unwrap_or(EVERY_ADDRESS - 1);
        *self.names.entry(name.to_owned()).or_insert(next)
    }

    /// Records a published port; answers the path of an earlier one it clashes with.
    fn publish(&mut self, port: &Published) -> Result<Option<&str>, Exhausted> {
        let width = usize::from(port.last - port.first) + 1;
        if self.checked + width > MAX_CHECKED_PORTS {
            return Err(Exhausted);
        }
        self.checked += width;
        let protocol = self.name(&port.protocol);
        let address = match &port.address {
            Some(address) => self.name(address),
            None => EVERY_ADDRESS,
        };
        let me = self.paths.len();
        self.paths.push(port.path.clone());
        let mut clash = None;
        for number in port.first..=port.last {
            if clash.is_none() {
                clash = if address == EVERY_ADDRESS {
                    self.any.get(&(protocol, number)).copied()
                } else {
                    self.exact
                        .get(&(protocol, number, EVERY_ADDRESS))
                        .or_else(|| self.exact.get(&(protocol, number, address)))
                        .copied()
                };
            }
            self.any.entry((protocol, number)).or_insert(me);
            self.exact.entry((protocol, number, address)).or_insert(me);
        }
        Ok(clash.map(|earlier| self.paths[earlier].as_str()))
    }
}

fn host_address(address: &str) -> Option<String> {
    let address = address.trim_start_matches('[').trim_end_matches(']');
    match address {
        "" | "0.0.0.0" | "::" => None,
        other => Some(other.to_owned()),
    }
}

fn port_range(text: &str) -> Option<(u16, u16)> {
    match text.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
            (first <= last).then_some((first, last))
        }
        None => {
            let port = text.trim().parse().ok()?;
            Some((port, port))
        }
    }
}

/// `[address:][host:]container[/protocol]`; `None` when no host port is published.
fn short_port(text: &str, path: String) -> Option<Published> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, protocol.to_ascii_lowercase()),
        None => (text, "tcp".to_owned()),
    };
    let (address, host) = if let Some(bracketed) = spec.strip_prefix('[') {
        let (address, rest) = bracketed.split_once("]:")?;
        let (host, _container) = rest.split_once(':')?;
        (address.to_owned(), host)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            0 | 1 => return None,
            2 => (String::new(), parts[0]),
            n => (parts[..n - 2].join(":"), parts[n - 2]),
        }
    };
    if host.is_empty() {
        return None;
    }
    let (first, last) = port_range(host)?;
    Some(Published {
        address: host_address(&address),
        first,
        last,
        protocol,
        path,
    })
}

fn long_port(port: &Map<String, Value>, path: String) -> Option<Published> {
    let (first, last) = match port.get("published")? {
        Value::Number(number) => {
            let port = u16::try_from(number.as_u64()?).ok()?;
            (port, port)
        }
        Value::String(text) => port_range(text)?,
        _ => return None,
    };
    Some(Published {
        address: port
            .get("host_ip")
            .and_then(Value::as_str)
            .and_then(host_address),
        first,
        last,
        protocol: port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("tcp")
            .to_ascii_lowercase(),
        path,
    })
}

/// The names a service lists, as a sequence of strings or (long syntax) a mapping's keys, or
/// sequence items' `source`: each with its path.
fn named_references<'a>(
    value: &'a Value,
    path: &str,
    field: Option<&str>,
) -> Vec<(&'a str, String)> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let name = match (item, field) {
                    (Value::String(name), _) => Some(name.as_str()),
                    (Value::Object(long), Some(field)) => long.get(field).and_then(Value::as_str),
                    _ => None,
                };
                name.map(|name| (name, index(path, i)))
            })
            .collect(),
        Value::Object(map) => map
            .keys()
            .map(|name| (name.as_str(), key(path, name)))
            .collect(),
        _ => Vec::new(),
    }
}

const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASS",
    "SECRET",
    "SECRETS",
    "TOKEN",
    "KEY",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "PRIVATE",
];
/// Last words that say the value is not the secret itself.
const NOT_SECRET_ENDINGS: &[&str] = &[
    "FILE",
    "PATH",
    "DIR",
    "ID",
    "NAME",
    "USER",
    "LENGTH",
    "SIZE",
    "TYPE",
    "ALGORITHM",
    "HEADER",
];

fn secret_looking(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(['_', '-', '.'])
        .filter(|word| !word.is_empty())
        .collect();
    let Some(last) = words.last() else {
        return false;
    };
    if NOT_SECRET_ENDINGS.contains(last) || words.contains(&"PUBLIC") {
        return false;
    }
    words.iter().any(|word| SECRET_WORDS.contains(word))
}

/// A value that is a literal (not an interpolation) and not a switch (`yes`, `true`, `0`…).
fn literal_secret(value: &str) -> bool {
    !value.is_empty()
        && !value.contains('$')
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "0" | "1"
        )
}

/// `scheme://user:password@…` with a literal password.
fn url_with_password(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return false;
    };
    matches!(userinfo.split_once(':'), Some((_, password)) if !password.is_empty() && !password.contains('$'))
}

const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// The reviewer: reads the raw configuration (for `environment`, where an interpolation is the
/// point) and the one with defaults in place (for everything else).
struct Review<'a> {
    raw: &'a Map<String, Value>,
    resolved: &'a Map<String, Value>,
    errors: &'a mut Vec<Finding>,
    warnings: &'a mut Vec<Finding>,
}

impl<'a> Review<'a> {
    fn new(
        raw: &'a Map<String, Value>,
        resolved: &'a Map<String, Value>,
        errors: &'a mut Vec<Finding>,
        warnings: &'a mut Vec<Finding>,
    ) -> Self {
        Self {
            raw,
            resolved,
            errors,
            warnings,
        }
    }

    fn declared(&self, section: &str) -> HashSet<&'a str> {
        self.resolved
            .get(section)
            .and_then(Value::as_object)
            .map(|map| map.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn error(&mut self, path: impl Into<String>, rule: &str, message: impl Into<String>) {
        self.errors.push(Finding::new(path, rule, message));
    }

    fn warn(&mut self, path: impl Into<String>, rule: &str, message: impl Into<String>) {
        self.warnings.push(Finding::new(path, rule, message));
    }

    fn run(mut self) {
        let empty = Map::new();
        let services = self
            .resolved
            .get("services")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let raw_services = self
            .raw
            .get("services")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let volumes = self.declared("volumes");
        let mut networks = self.declared("networks");
        networks.insert("default");
        let secrets = self.declared("secrets");
        let configs = self.declared("configs");
        let mut cycles = dependency_cycles(services);
        let mut published = PortBook::default();
        let mut ports_unchecked = false;

        for (name, service) in services {
            let Some(service) = service.as_object() else {
                continue;
            };
            let path = key("services", name);
            let at = |field: &str| key(&path, field);
            let has = |field: &str| service.get(field).is_some_and(|v| !v.is_null());

            if !has("image") && !has("build") && !has("extends") {
                self.error(
                    path.clone(),
                    rules::NO_IMAGE,
                    format!("service `{name}` has neither `image` nor `build`: nothing to run"),
                );
            }
            if let Some(Value::Array(capabilities)) = service.get("cap_add") {
                for (i, capability) in capabilities.iter().enumerate() {
                    let Some(capability) = capability.as_str() else {
                        continue;
                    };
                    let bare = capability.to_ascii_uppercase();
                    let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
                    if bare == "ALL" || bare == "SYS_ADMIN" {
                        self.warn(
                            index(&at("cap_add"), i),
                            rules::DANGEROUS_CAPABILITY,
                            format!("`cap_add: {capability}` gives the container near-root power over the host"),
                        );
                    }
                }
            }
            if let Some(used) = service.get("configs") {
                for (config, path) in named_references(used, &at("configs"), Some("source")) {
                    if !configs.contains(config) {
                        self.error(
                            path,
                            rules::UNDEFINED_CONFIG,
                            format!(
                                "config `{config}` is not declared under the top-level `configs`"
                            ),
                        );
                    }
                }
            }
            if let Some(depends_on) = service.get("depends_on") {
                for (dependency, path) in named_references(depends_on, &at("depends_on"), None) {
                    if !services.contains_key(dependency) {
                        self.error(
                            path,
                            rules::UNKNOWN_DEPENDENCY,
                            format!("service `{name}` depends on `{dependency}`, which is not a service of this file"),
                        );
                    }
                }
            }
            if let Some(found) = cycles.remove(name.as_str()) {
                self.errors.extend(found);
            }
            if let Some(environment) = raw_services
                .get(name)
                .and_then(|service| service.get("environment"))
            {
                self.environment(environment, &at("environment"));
            }
            if let Some(Value::String(image)) = service.get("image")
                && !has("build")
                && !image.contains('$')
            {
                self.image(image, &at("image"));
            }
            for field in ["ipc", "network_mode", "pid"] {
                if service.get(field).and_then(Value::as_str) == Some("host") {
                    self.warn(
                        at(field),
                        rules::HOST_NAMESPACE,
                        format!("`{field}: host` shares the host's namespace with the container"),
                    );
                }
            }
            if let Some(used) = service.get("networks") {
                for (network, path) in named_references(used, &at("networks"), None) {
                    if !networks.contains(network) {
                        self.error(
                            path,
                            rules::UNDEFINED_NETWORK,
                            format!(
                                "network `{network}` is not declared under the top-level `networks`"
                            ),
                        );
                    }
                }
            }
            if let Some(Value::Array(ports)) = service.get("ports") {
                for (i, port) in ports.iter().enumerate() {
                    let path = index(&at("ports"), i);
                    let port = match port {
                        Value::String(text) => short_port(text, path),
                        Value::Object(long) => long_port(long, path),
                        _ => None,
                    };
                    let Some(port) = port else { continue };
                    if ports_unchecked {
                        continue;
                    }
                    match published.publish(&port) {
                        Ok(Some(earlier)) => {
                            let message = format!(
                                "host port {} is already published by {earlier}",
                                port.describe()
                            );
                            self.error(port.path, rules::PORT_TWICE, message);
                        }
                        Ok(None) => {}
                        Err(Exhausted) => {
                            ports_unchecked = true;
                            self.warn(
                                port.path,
                                rules::PORTS_UNCHECKED,
                                format!("more than {MAX_CHECKED_PORTS} host ports are published: from here on they are not checked for clashes"),
                            );
                        }
                    }
                }
            }
            if service.get("privileged") == Some(&Value::Bool(true)) {
                self.warn(
                    at("privileged"),
                    rules::PRIVILEGED,
                    "a privileged container has every capability and the host's devices",
                );
            }
            if let Some(used) = service.get("secrets") {
                for (secret, path) in named_references(used, &at("secrets"), Some("source")) {
                    if !secrets.contains(secret) {
                        self.error(
                            path,
                            rules::UNDEFINED_SECRET,
                            format!(
                                "secret `{secret}` is not declared under the top-level `secrets`"
                            ),
                        );
                    }
                }
            }
            if let Some(Value::Array(mounts)) = service.get("volumes") {
                for (i, mount) in mounts.iter().enumerate() {
                    self.volume(mount, &index(&at("volumes"), i), &volumes);
                }
            }
        }
        if self.resolved.contains_key("version") {
            self.warn(
                "version",
                rules::OBSOLETE_VERSION,
                "`version` is obsolete: the Compose Specification ignores it",
            );
        }
    }

    fn environment(&mut self, environment: &Value, path: &str) {
        let entries: Vec<(String, Option<String>, String)> = match environment {
            Value::Object(map) => map
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        Value::Null => None,
                        Value::String(text) => Some(text.clone()),
                        other => Some(other.to_string()),
                    };
                    (name.clone(), value, key(path, name))
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item = item.as_str()?;
                    let (name, value) = match item.split_once('=') {
                        Some((name, value)) => (name, Some(value.to_owned())),
                        None => (item, None),
                    };
                    Some((name.to_owned(), value, index(path, i)))
                })
                .collect(),
            _ => Vec::new(),
        };
        for (name, value, path) in entries {
            let Some(value) = value else { continue };
            if secret_looking(&name) && literal_secret(&value) {
                self.warn(
                    path,
                    rules::PLAIN_SECRET,
                    format!("`{name}` holds a literal secret: interpolate it (`${{{name}}}`) or use `secrets`"),
                );
            } else if url_with_password(&value) {
                self.warn(
                    path,
                    rules::PLAIN_SECRET,
                    format!("`{name}` is a URL with a literal password in it: interpolate the password or use `secrets`"),
                );
            }
        }
    }

    fn image(&mut self, image: &str, path: &str) {
        if image.contains('@') {
            return; // pinned by a digest
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, "latest")) => self.warn(
                path,
                rules::LATEST_TAG,
                format!("`{image}` uses the `latest` tag: pin a version (or a digest) so that a deployment is repeatable"),
            ),
            Some(_) => {}
            None => self.warn(
                path,
                rules::NO_TAG,
                format!("`{image}` has no tag, so it means `latest`: pin a version (or a digest)"),
            ),
        }
    }

    fn volume(&mut self, mount: &Value, path: &str, declared: &HashSet<&str>) {
        let (kind, source) = match mount {
            Value::String(text) => {
                let mut parts = text.splitn(2, ':');
                let source = parts.next().unwrap_or("");
                let Some(rest) = parts.next() else {
                    return; // an anonymous volume: only the container's path
                };
                let windows_drive = source.len() == 1 && rest.starts_with(['\\', '/']);
                let bind = windows_drive
                    || source.starts_with(['.', '/', '~', '\\'])
                    || source.contains(['/', '\\']);
                (if bind { "bind" } else { "volume" }, source)
            }
            Value::Object(long) => {
                let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
                let Some(source) = long.get("source").and_then(Value::as_str) else {
                    return;
                };
                (kind, source)
            }
            _ => return,
        };
        if kind == "bind" && DOCKER_SOCKETS.contains(&source.trim_end_matches('/')) {
            self.warn(
                path,
                rules::DOCKER_SOCKET,
                "the Docker socket is mounted: the container controls the host's Docker",
            );
        }
        if kind == "volume"
            && !source.is_empty()
            && !source.contains('$')
            && !declared.contains(source)
        {
            self.error(
                path,
                rules::UNDEFINED_VOLUME,
                format!("named volume `{source}` is not declared under the top-level `volumes`"),
            );
        }
    }
}

/// Most cycles reported (a file can hold many more), and the services named at each end of a
/// long one.
const MAX_CYCLES: usize = 20;
const CYCLE_ENDS: usize = 10;

/// Each cycle of `depends_on` among the defined services, found in the configuration's order,
/// as errors keyed by the service where the cycle starts (the first one the search met).
fn dependency_cycles(services: &Map<String, Value>) -> HashMap<&str, Vec<Finding>> {
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    let position: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = services
        .values()
        .map(|service| {
            service
                .get("depends_on")
                .map(|depends_on| {
                    named_references(depends_on, "", None)
                        .into_iter()
                        .filter_map(|(name, _)| position.get(name).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    // 0: not met, 1: on the current path, 2: done. Iterative: a long chain cannot overflow.
    let mut state = vec![0u8; names.len()];
    let mut reported = 0usize;
    let mut found: HashMap<&str, Vec<Finding>> = HashMap::new();
    for start in 0..names.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match state[target] {
                    0 => {
                        state[target] = 1;
                        path.push((target, 0));
                    }
                    1 if reported < MAX_CYCLES => {
                        reported += 1;
                        let from = path
                            .iter()
                            .position(|(n, _)| *n == target)
                            .unwrap_or_default();
                        let mut cycle: Vec<String> = path[from..]
                            .iter()
                            .map(|(n, _)| names[*n].to_owned())
                            .collect();
                        cycle.push(names[target].to_owned());
                        if cycle.len() > 2 * CYCLE_ENDS + 1 {
                            let left_out = cycle.len() - 2 * CYCLE_ENDS;
                            let tail = cycle.split_off(cycle.len() - CYCLE_ENDS);
                            cycle.truncate(CYCLE_ENDS);
                            cycle.push(format!("… {left_out} more …"));
                            cycle.extend(tail);
                        }
                        let first = names[target];
                        found.entry(first).or_default().push(Finding::new(
                            key(&key("services", first), "depends_on"),
                            rules::DEPENDENCY_CYCLE,
                            format!(
                                "services depend on each other in a cycle: {}",
                                cycle.join(" → ")
                            ),
                        ));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Writing YAML.

/// The configuration as YAML text (for answers and diffs): block style, two spaces, keys in the
/// order the mapping holds them, strings quoted (JSON-style) whenever a plain scalar could read
/// back as something else. [`parse`] reads it back to the same value.
pub fn to_yaml(config: &Value) -> String {
    let mut out = String::new();
    match config {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// `inline`: the first key goes on the current line (after a sequence's `- `).
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str(&string_text(key));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, indent + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                out.push(' ');
                write_mapping(out, inner, indent + 2, true);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

fn string_text(text: &str) -> String {
    if needs_quotes(text) {
        quoted(text)
    } else {
        text.to_owned()
    }
}

fn needs_quotes(text: &str) -> bool {
    const YAML_1_1_WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let Some(first) = text.chars().next() else {
        return true;
    };
    !plain(text).is_string()
        || YAML_1_1_WORDS.contains(&text)
        || "-?:,[]{}#&*!|>'\"%@`<= ".contains(first)
        || text.ends_with([' ', ':'])
        || text.contains(": ")
        || text.contains(" #")
        || text.chars().any(|c| c.is_control() || c == '\u{feff}')
        || text.trim_start_matches(['-', '+']).starts_with('.')
        || (first.is_ascii_digit() && text.contains(':'))
}

fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    fn report(yaml: &str) -> Report {
        validate_text(yaml)
    }

    fn rules_of(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule.as_str()).collect()
    }

    fn find<'r>(findings: &'r [Finding], rule: &str) -> Vec<&'r Finding> {
        findings.iter().filter(|f| f.rule == rule).collect()
    }

    const DJANGO: &str = r#"
name: shop
services:
  nginx:
    image: nginx:1.27-alpine
    ports:
      - "80:80"
      - "443:443"
    volumes:
      - ./nginx/conf.d:/etc/nginx/conf.d:ro
      - static:/srv/static:ro
    depends_on:
      - web
    restart: unless-stopped
    networks: [front]
  web:
    build:
      context: .
      dockerfile: Dockerfile
    image: shop/web:1.4.2
    command: gunicorn shop.wsgi:application --bind 0.0.0.0:8000 --workers 3
    environment:
      DJANGO_SETTINGS_MODULE: shop.settings.production
      DJANGO_SECRET_KEY: ${DJANGO_SECRET_KEY:?set it}
      DATABASE_URL: postgres://shop:${POSTGRES_PASSWORD}@db:5432/shop
      REDIS_URL: redis://cache:6379/0
      DEBUG: "false"
    expose:
      - "8000"
    volumes:
      - static:/app/static
    depends_on:
      db:
        condition: service_healthy
      cache:
        condition: service_started
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health/"]
      interval: 30s
      timeout: 5s
      retries: 3
    restart: unless-stopped
    networks: [front, back]
    secrets:
      - source: db_password
        target: db_password
  db:
    image: postgres:16.4
    environment:
      POSTGRES_DB: shop
      POSTGRES_USER: shop
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    volumes:
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U shop"]
      interval: 10s
      timeout: 5s
      retries: 5
    secrets: [db_password]
    networks: [back]
    deploy:
      resources:
        limits:
          cpus: "1.0"
          memory: 1g
  cache:
    image: redis:7.4-alpine
    command: ["redis-server", "--appendonly", "yes"]
    volumes:
      - redisdata:/data
    networks:
      back:
        aliases: [redis]
volumes:
  pgdata: {}
  redisdata:
  static:
networks:
  front:
  back:
    internal: true
secrets:
  db_password:
    file: ./secrets/db_password.txt
"#;

    #[test]
    fn a_stack_with_a_cycle_in_depends_on_and_a_service_without_image_fails_validation_with_both_errors()
     {
        let report = report(
            "services:\n  a:\n    image: busybox:1.36\n    depends_on: [b]\n  b:\n    depends_on: [a]\n",
        );
        assert!(!report.valid);
        assert_eq!(rules_of(&report.errors), ["dependency_cycle", "no_image"]);
        assert_eq!(report.errors[0].path, "services.a.depends_on");
        assert!(
            report.errors[0].message.ends_with("a → b → a"),
            "{}",
            report.errors[0].message
        );
        assert_eq!(report.errors[1].path, "services.b");
    }

    #[test]
    fn a_realistic_django_postgresql_redis_nginx_stack_passes_with_no_errors_and_no_warnings() {
        let report = report(DJANGO);
        assert_eq!(report.errors, [], "{report:#?}");
        assert_eq!(report.warnings, [], "{report:#?}");
        assert!(report.valid);
    }

    #[test]
    fn an_unknown_service_key_is_a_spec_error_at_its_path() {
        let report = report("services:\n  web:\n    image: nginx:1.27\n    imagee: oops\n");
        assert_eq!(rules_of(&report.errors), ["spec"]);
        assert_eq!(report.errors[0].path, "services.web.imagee");
        assert!(report.errors[0].message.contains("`imagee`"));
    }

    #[test]
    fn an_unknown_top_level_key_is_a_spec_error_but_an_x_extension_is_not() {
        let report =
            report("services:\n  web:\n    image: nginx:1.27\nservise: {}\nx-common: {a: 1}\n");
        assert_eq!(rules_of(&report.errors), ["spec"]);
        assert_eq!(report.errors[0].path, "servise");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_a_spec_error_with_the_path_of_the_value() {
        let report = report(
            "services:\n  web:\n    image: nginx:1.27\n    healthcheck:\n      retries: many\n",
        );
        assert_eq!(rules_of(&report.errors), ["spec"]);
        assert_eq!(report.errors[0].path, "services.web.healthcheck.retries");
    }

    #[test]
    fn a_malformed_port_is_a_spec_error_at_its_index() {
        let report = report(
            "services:\n  web:\n    image: nginx:1.27\n    ports:\n      - \"8080:80\"\n      - \"80:eighty\"\n",
        );
        assert_eq!(rules_of(&report.errors), ["spec"]);
        assert!(
            report.errors[0].path.starts_with("services.web.ports[1]"),
            "{report:#?}"
        );
    }

    #[test]
    fn an_interpolated_value_is_not_judged_by_the_spec_and_its_default_is_used() {
        let report = report(
            "services:\n  web:\n    image: nginx:1.27\n    ports: [\"${WEB_PORT}:80\"]\n    mem_limit: ${MEM}\n  api:\n    image: nginx:1.27\n    ports: [\"${API_PORT:-8080}:80\"]\n  admin:\n    image: nginx:1.27\n    ports: [\"8080:81\"]\n",
        );
        assert_eq!(rules_of(&report.errors), ["port_twice"], "{report:#?}");
        assert_eq!(report.errors[0].path, "services.api.ports[0]");
    }

    #[test]
    fn a_service_with_neither_image_nor_build_is_an_error_but_build_alone_is_fine() {
        let report = report("services:\n  web:\n    command: run\n  app:\n    build: .\n");
        assert_eq!(rules_of(&report.errors), ["no_image"]);
        assert_eq!(report.errors[0].path, "services.web");
    }

    #[test]
    fn a_host_port_published_by_two_services_is_an_error() {
        let report = report(
            "services:\n  a:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n  b:\n    image: nginx:1.27\n    ports:\n      - \"9090:90\"\n      - target: 81\n        published: 8080\n",
        );
        assert_eq!(rules_of(&report.errors), ["port_twice"]);
        assert_eq!(report.errors[0].path, "services.b.ports[1]");
        assert!(report.errors[0].message.contains("services.a.ports[0]"));
    }

    #[test]
    fn ports_on_other_protocols_or_other_addresses_do_not_clash_but_overlapping_ranges_and_any_address_do()
     {
        let fine = report(
            "services:\n  a:\n    image: dns:1.0\n    ports: [\"53:53/udp\", \"127.0.0.1:8080:80\", \"[::1]:9000:9000\"]\n  b:\n    image: dns:1.0\n    ports: [\"53:53/tcp\", \"127.0.0.2:8080:80\", \"9001:9000\", \"80\"]\n",
        );
        assert_eq!(fine.errors, [], "{fine:#?}");
        let clash = report(
            "services:\n  a:\n    image: web:1.0\n    ports: [\"127.0.0.1:8080:80\", \"3000-3005:3000-3005\"]\n  b:\n    image: web:1.0\n    ports: [\"8080:80\", \"3005:3000\", \"3005:3000/udp\"]\n",
        );
        assert_eq!(
            find(&clash.errors, "port_twice")
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["services.b.ports[0]", "services.b.ports[1]"]
        );
    }

    #[test]
    fn the_same_host_port_twice_in_one_service_is_an_error() {
        let report =
            report("services:\n  a:\n    image: web:1.0\n    ports: [\"80:80\", \"80:8080\"]\n");
        assert_eq!(rules_of(&report.errors), ["port_twice"]);
        assert_eq!(report.errors[0].path, "services.a.ports[1]");
    }

    #[test]
    fn depends_on_an_unknown_service_is_an_error_in_both_syntaxes() {
        let report = report(
            "services:\n  a:\n    image: web:1.0\n    depends_on: [ghost]\n  b:\n    image: web:1.0\n    depends_on:\n      phantom:\n        condition: service_started\n",
        );
        assert_eq!(
            rules_of(&report.errors),
            ["unknown_dependency", "unknown_dependency"]
        );
        assert_eq!(report.errors[0].path, "services.a.depends_on[0]");
        assert_eq!(report.errors[1].path, "services.b.depends_on.phantom");
    }

    #[test]
    fn a_dependency_cycle_names_its_services_in_order() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    depends_on: [b]\n  b:\n    image: x:1\n    depends_on: [c]\n  c:\n    image: x:1\n    depends_on: {a: {condition: service_started}}\n  d:\n    image: x:1\n    depends_on: [d]\n  e:\n    image: x:1\n    depends_on: [a]\n",
        );
        let cycles = find(&report.errors, "dependency_cycle");
        assert_eq!(cycles.len(), 2, "{report:#?}");
        assert!(
            cycles[0].message.ends_with("a → b → c → a"),
            "{}",
            cycles[0].message
        );
        assert!(
            cycles[1].message.ends_with("d → d"),
            "{}",
            cycles[1].message
        );
        assert_eq!(cycles[1].path, "services.d.depends_on");
    }

    #[test]
    fn a_long_chain_of_dependencies_is_checked_without_overflowing_the_stack() {
        let mut services = Map::new();
        for i in 0..20_000 {
            let mut service = Map::new();
            service.insert("image".into(), json!("x:1"));
            if i > 0 {
                service.insert("depends_on".into(), json!([format!("s{}", i - 1)]));
            }
            services.insert(format!("s{i}"), Value::Object(service));
        }
        let report = validate(&json!({ "services": services }));
        assert!(report.valid, "{:?}", report.errors.first());
    }

    #[test]
    fn an_undeclared_named_volume_is_an_error_but_bind_mounts_are_not() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    volumes:\n      - data:/data\n      - ./conf:/conf\n      - /srv/x:/x\n      - ~/y:/y\n      - /anonymous\n      - logs:/logs\n      - type: volume\n        source: cache\n        target: /cache\n      - type: bind\n        source: ./z\n        target: /z\nvolumes:\n  logs:\n",
        );
        assert_eq!(
            rules_of(&report.errors),
            ["undefined_volume", "undefined_volume"],
            "{report:#?}"
        );
        assert_eq!(report.errors[0].path, "services.a.volumes[0]");
        assert_eq!(report.errors[1].path, "services.a.volumes[6]");
    }

    #[test]
    fn an_undeclared_network_is_an_error_but_default_is_implicit() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    networks: [default, front, back]\n  b:\n    image: x:1\n    networks:\n      nowhere:\n        aliases: [b]\nnetworks:\n  front:\n",
        );
        assert_eq!(
            rules_of(&report.errors),
            ["undefined_network", "undefined_network"]
        );
        assert_eq!(report.errors[0].path, "services.a.networks[2]");
        assert_eq!(report.errors[1].path, "services.b.networks.nowhere");
    }

    #[test]
    fn undeclared_secrets_and_configs_are_errors() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    secrets: [token, {source: key}]\n    configs: [conf]\nsecrets:\n  token:\n    file: ./token\n",
        );
        assert_eq!(
            rules_of(&report.errors),
            ["undefined_config", "undefined_secret"]
        );
        assert_eq!(report.errors[0].path, "services.a.configs[0]");
        assert_eq!(report.errors[1].path, "services.a.secrets[1]");
    }

    #[test]
    fn an_image_with_latest_or_no_tag_is_a_warning_but_a_digest_or_a_version_is_pinned() {
        let report = report(
            "services:\n  a:\n    image: nginx:latest\n  b:\n    image: registry.example.com:5000/team/app\n  c:\n    image: nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n  d:\n    image: registry.example.com:5000/team/app:2.1\n  e:\n    image: mine\n    build: .\n",
        );
        assert!(report.valid, "{report:#?}");
        assert_eq!(rules_of(&report.warnings), ["latest_tag", "no_tag"]);
        assert_eq!(report.warnings[0].path, "services.a.image");
        assert_eq!(report.warnings[1].path, "services.b.image");
    }

    #[test]
    fn a_privileged_container_is_a_warning() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    privileged: true\n  b:\n    image: x:1\n    privileged: false\n",
        );
        assert!(report.valid);
        assert_eq!(rules_of(&report.warnings), ["privileged"]);
        assert_eq!(report.warnings[0].path, "services.a.privileged");
    }

    #[test]
    fn a_literal_secret_in_environment_is_a_warning_in_both_forms_but_an_interpolation_is_not() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    environment:\n      DB_PASSWORD: hunter2\n      API_TOKEN: ${API_TOKEN}\n      PASSWORD_FILE: /run/secrets/pw\n      MYSQL_ALLOW_EMPTY_PASSWORD: \"yes\"\n      PUBLIC_KEY: ssh-ed25519 AAAA\n      DATABASE_URL: postgres://u:s3cret@db/app\n      MODE: production\n  b:\n    image: x:1\n    environment:\n      - SECRET_KEY=abc123\n      - AWS_SECRET_ACCESS_KEY\n      - GITHUB_TOKEN=${GITHUB_TOKEN:?}\n",
        );
        assert!(report.valid);
        let paths: Vec<&str> = find(&report.warnings, "plain_secret")
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "services.a.environment.DATABASE_URL",
                "services.a.environment.DB_PASSWORD",
                "services.b.environment[0]",
            ]
        );
    }

    #[test]
    fn host_namespaces_the_docker_socket_and_dangerous_capabilities_are_warnings() {
        let report = report(
            "services:\n  a:\n    image: x:1\n    network_mode: host\n    pid: host\n    cap_add: [NET_ADMIN, SYS_ADMIN]\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
        );
        assert!(report.valid, "{report:#?}");
        assert_eq!(
            rules_of(&report.warnings),
            [
                "dangerous_capability",
                "host_namespace",
                "host_namespace",
                "docker_socket"
            ]
        );
        assert_eq!(report.warnings[0].path, "services.a.cap_add[1]");
        assert_eq!(report.warnings[3].path, "services.a.volumes[0]");
    }

    #[test]
    fn the_obsolete_version_key_is_a_warning_even_as_a_number() {
        let report = report("version: 3.8\nservices:\n  a:\n    image: x:1\n");
        assert!(report.valid, "{report:#?}");
        assert_eq!(rules_of(&report.warnings), ["obsolete_version"]);
    }

    #[test]
    fn the_billion_laughs_is_refused_by_the_node_budget() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (previous, name) = (pair[0], pair[1]);
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{previous}"); 10].join(",")
            ));
        }
        bomb.push_str("services:\n  web:\n    image: x:1\n    command: *i\n");
        // 10^9 strings once expanded: refused by the node budget, before they are made (an
        // expansion would exhaust the memory; the time it takes is a benchmark's business).
        let error = parse(&bomb).unwrap_err();
        assert!(error.message.contains("nodes"), "{error}");
        let report = validate_text(&bomb);
        assert_eq!(rules_of(&report.errors), ["spec"]);
    }

    #[test]
    fn a_small_number_of_aliases_is_accepted_and_merge_keys_are_applied() {
        let config = parse(
            "x-common: &common\n  restart: always\n  image: x:1\nservices:\n  a:\n    <<: *common\n    image: x:2\n  b: *common\n",
        )
        .unwrap();
        assert_eq!(
            config["services"]["a"],
            json!({"restart": "always", "image": "x:2"})
        );
        assert_eq!(
            config["services"]["b"],
            json!({"restart": "always", "image": "x:1"})
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let deep = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let error = parse(&deep).unwrap_err();
        assert!(error.message.contains("deeper"), "{error}");
        let very_deep = format!("a: {}", "[".repeat(MAX_CONFIGURATION_BYTES - 10));
        assert!(parse(&very_deep).is_err());
        let deep_json = format!("{{\"a\": {}", "{\"a\": ".repeat(40_000));
        // Refused by our limit or, when its scanner reads ahead, by the YAML parser's own.
        let error = parse(&deep_json).unwrap_err();
        assert!(
            error.message.contains("deeper") || error.message.contains("recursion limit"),
            "{error}"
        );
        let deep_ok = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(parse(&deep_ok).is_ok());
    }

    #[test]
    fn a_configuration_over_the_size_limit_is_refused_before_parsing() {
        let mut text = String::from("services: {}\n#");
        text.push_str(&"x".repeat(MAX_CONFIGURATION_BYTES));
        let error = parse(&text).unwrap_err();
        assert_eq!(error.path, "");
        assert!(error.message.contains("bytes"), "{error}");
        // Just under the limit, the same comment is fine.
        let text = format!(
            "services: {{}}\n#{}",
            "x".repeat(MAX_CONFIGURATION_BYTES - 20)
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn a_root_that_is_not_a_mapping_is_refused() {
        for text in ["- a\n- b\n", "just text\n", "", "42", "---\n"] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.path, "", "{text:?}");
            assert!(error.message.contains("mapping"), "{text:?}: {error}");
        }
        let report = validate(&json!(["services"]));
        assert_eq!(rules_of(&report.errors), ["spec"]);
        assert!(!report.valid);
    }

    #[test]
    fn several_documents_duplicate_keys_and_unknown_tags_are_refused() {
        let error = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(error.message.contains("several"), "{error}");
        let error = parse("services:\n  web:\n    image: a\n    image: b\n").unwrap_err();
        assert_eq!(error.path, "services.web.image");
        let error = parse("services: !reset {}\n").unwrap_err();
        assert!(error.message.contains("tag"), "{error}");
        let error = parse("? [a, b]\n: c\n").unwrap_err();
        assert!(error.message.contains("key"), "{error}");
        let error = parse("a: *nowhere\n").unwrap_err();
        assert!(
            error.message.contains("not YAML") || error.message.contains("anchor"),
            "{error}"
        );
        let error = parse("a: [1, 2\n").unwrap_err();
        assert!(error.message.starts_with("not YAML or JSON"), "{error}");
        assert_eq!(error.path, "a[2]");
        assert_eq!(error.to_string(), format!("a[2]: {}", error.message));
    }

    #[test]
    fn json_input_parses_like_yaml_and_validates() {
        let config = parse(
            r#"{"services": {"web": {"image": "nginx:1.27", "ports": ["8080:80"], "environment": {"WORKERS": 4}}}}"#,
        )
        .unwrap();
        assert_eq!(
            config["services"]["web"]["environment"]["WORKERS"],
            json!(4)
        );
        let report = validate(&config);
        assert!(report.valid, "{report:#?}");
        assert_eq!(report.warnings, []);
    }

    #[test]
    fn plain_scalars_follow_the_yaml_1_2_core_schema() {
        let config = parse(
            "a: yes\nb: true\nc: 010\nd: 0x1F\ne: 1.5e3\nf: ~\ng: \"true\"\nh: 80:80\ni: .inf\nj: !!str 12\nk: 18446744073709551615\n",
        )
        .unwrap();
        assert_eq!(
            config,
            json!({"a": "yes", "b": true, "c": 10, "d": 31, "e": 1500.0, "f": null, "g": "true",
                   "h": "80:80", "i": ".inf", "j": "12", "k": 18446744073709551615u64})
        );
    }

    #[test]
    fn to_yaml_writes_text_that_parses_back_to_the_same_configuration() {
        let config = parse(DJANGO).unwrap();
        let text = to_yaml(&config);
        assert_eq!(parse(&text).unwrap(), config, "{text}");
        assert!(text.contains("services:\n  cache:\n"), "{text}");
        let tricky = json!({
            "strings": ["", "yes", "no", "true", "null", "~", "12", "1.5", "80:80", "a: b", "x #y",
                        "- dash", "line\nbreak", " padded ", "trailing:", "<<", ".inf", "0x1F",
                        "tab\there", "quote\"s", "back\\slash", "\u{7f}del", "é", "*star", "&amp"],
            "numbers": [1, -2, 1.5, 18446744073709551615u64],
            "empty": {"map": {}, "list": []},
            "nested": [[1, [2]], {"a": {"b": [ {"c": null} ]}}],
            "odd keys": {"my.key": true, "80": false, "": 0},
        });
        let text = to_yaml(&tricky);
        assert_eq!(parse(&text).unwrap(), tricky, "{text}");
        assert_eq!(to_yaml(&text_root()), "services: {}\n");
    }

    fn text_root() -> Value {
        json!({"services": {}})
    }

    #[test]
    fn paths_quote_keys_that_are_not_plain_words() {
        let report = report("services:\n  my.app:\n    command: run\n");
        assert_eq!(report.errors[0].path, "services[\"my.app\"]");
    }

    #[test]
    fn usual_long_and_short_syntaxes_extensions_and_compose_shorthands_are_no_spec_errors() {
        let text = r#"
version: "3.8"
services:
  web:
    image: "nginx:1.27"
    ports:
      - 8080:80
      - 443
      - "127.0.0.1:5000-5010:5000-5010/udp"
      - target: 90
        published: "9090"
        protocol: tcp
        mode: host
    expose: [8000, "9000"]
    environment:
      - WORKERS=4
      - DEBUG
    labels:
      traefik.port: 80
      traefik.enable: true
    healthcheck:
      test: curl -f http://localhost || exit 1
      start_period: 40s
    ulimits:
      nofile:
        soft: 20000
        hard: 40000
    logging:
      driver: json-file
      options:
        max-size: "10m"
        max-file: "3"
    extra_hosts:
      - "host.docker.internal:host-gateway"
    deploy:
      replicas: 2
      resources:
        limits: {cpus: '0.50', memory: 50M}
        reservations: {memory: 20M}
      restart_policy: {condition: on-failure, max_attempts: 3}
    user: "1000:1000"
    read_only: true
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
    tmpfs: [/tmp]
    stop_grace_period: 1m30s
    sysctls:
      net.core.somaxconn: 1024
    shm_size: 256m
    env_file: .env
    entrypoint: ["/bin/sh", "-c"]
    working_dir: /app
    init: true
    gpus: all
    x-custom: 1
  worker:
    image: app:1
    network_mode: "service:web"
    volumes_from: [web]
    mem_limit: 512m
    cpus: 1.5
    restart: on-failure:5
"#;
        let report = validate_text(text);
        assert_eq!(report.errors, [], "{report:#?}");
    }

    #[test]
    fn wide_port_ranges_are_checked_up_to_a_bound_and_then_a_warning_says_the_rest_are_not() {
        let mut text = String::from("services:\n");
        for i in 0..6 {
            text.push_str(&format!(
                "  s{i}:\n    image: x:1\n    ports: [\"{}:1-65535/tcp\"]\n",
                if i % 2 == 0 {
                    "1-65535"
                } else {
                    "127.0.0.1:1-65535"
                }
            ));
        }
        let report = report(&text);
        assert_eq!(
            find(&report.errors, "port_twice")
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            [
                "services.s1.ports[0]",
                "services.s2.ports[0]",
                "services.s3.ports[0]"
            ]
        );
        assert_eq!(rules_of(&report.warnings), ["ports_unchecked"]);
        assert_eq!(report.warnings[0].path, "services.s4.ports[0]");
    }

    #[test]
    fn a_long_cycle_is_reported_with_its_ends_and_many_cycles_are_capped() {
        let mut services = Map::new();
        for i in 0..200 {
            let mut depends_on = vec![json!(format!("s{}", (i + 1) % 200))];
            if i == 199 {
                depends_on.extend((0..199).map(|j| json!(format!("s{j}"))));
            }
            services.insert(
                format!("s{i}"),
                json!({"image": "x:1", "depends_on": depends_on}),
            );
        }
        let report = validate(&json!({ "services": services }));
        let cycles = find(&report.errors, "dependency_cycle");
        assert_eq!(cycles.len(), MAX_CYCLES);
        assert!(
            cycles[0]
                .message
                .ends_with("s0 → s1 → s2 → s3 → s4 → s5 → s6 → s7 → s8 → s9 → … 181 more … → s191 → s192 → s193 → s194 → s195 → s196 → s197 → s198 → s199 → s0"),
            "{}",
            cycles[0].message
        );
    }

    #[test]
    fn defaults_of_interpolations_are_put_in_place_once_and_unclosed_ones_are_kept() {
        assert_eq!(substitute_defaults("${A:-8080}:80"), "8080:80");
        assert_eq!(
            substitute_defaults("${A-x}${B}$$C${D:?e}"),
            "x${B}$$C${D:?e}"
        );
        assert_eq!(substitute_defaults("${A:-${B:-1}}"), "${B:-1}");
        assert_eq!(substitute_defaults("a ${b ${c}"), "a ${b ${c}");
        let nested = "${A:-".repeat(50_000);
        assert_eq!(substitute_defaults(&nested), nested);
    }
}

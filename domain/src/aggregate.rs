//! The shape every aggregate takes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An aggregate: a state folded from its events, and the rules that turn a command into new
/// events. Both functions are pure.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// What can be asked of it.
    type Command;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stream category: streams are named `{CATEGORY}-{id}`.
    const CATEGORY: &'static str;

    /// Decides what happens: the events a command produces, or why it is refused. An empty list
    /// means the command changes nothing (it is already in effect).
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state.
    fn evolve(self, event: &Self::Event) -> Self;

    /// The resources this aggregate belongs to, as `(category, id)` pairs: a build belongs to
    /// its project. Every event it records names them in its metadata (`parents`), so readers
    /// of the log (the live feed) can follow a resource's children without loading them.
    fn parents(&self) -> Vec<(&'static str, uuid::Uuid)> {
        Vec::new()
    }

    /// Folds events into a state, from the default.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        events
            .into_iter()
            .fold(Self::default(), |state, e| state.evolve(e))
    }
}

/// An event that can be stored: a type name and a JSON object of data.
///
/// Implemented by serde-tagged enums: `#[serde(tag = "type", content = "data")]`, whose variant
/// names are the event types.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug {
    /// The version of the data's shape, recorded in every event's metadata (`schema`). Raise it
    /// when a type's data changes shape, with an [`Upcaster`] from the old version.
    const SCHEMA_VERSION: u32 = 1;

    /// The upcasters of these events, keyed by (type, version): each turns one type's data
    /// from its version to the next. A type with no upcaster at a version kept its shape.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// The event's type and data, as stored.
    fn encode(&self) -> (String, serde_json::Value) {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                let ty = match m.remove("type") {
                    Some(serde_json::Value::String(s)) => s,
                    _ => String::new(),
                };
                let data = m
                    .remove("data")
                    .unwrap_or(serde_json::Value::Object(Default::default()));
                (ty, data)
            }
            // Domain events are enums of structs: they always serialize to objects.
            _ => (String::new(), serde_json::Value::Null),
        }
    }

    /// Reads a stored event back: its data is first brought from the schema version its
    /// metadata records (1 when it records none) to [`Self::SCHEMA_VERSION`] by the upcasters.
    /// Every reader of the log (aggregates, projections, the live feed) reads through this.
    fn decode_stored(
        event_type: &str,
        metadata: &serde_json::Value,
        data: &serde_json::Value,
    ) -> Result<Self, EventDecodeError> {
        match upcast::<Self>(event_type, metadata, data)? {
            std::borrow::Cow::Borrowed(data) => Self::decode(event_type, data),
            std::borrow::Cow::Owned(data) => Self::decode(event_type, &data),
        }
    }

    /// Reads an event back from its type and data, in the current schema.
    fn decode(event_type: &str, data: &serde_json::Value) -> Result<Self, EventDecodeError> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data })).map_err(
            |e| EventDecodeError {
                event_type: event_type.to_owned(),
                reason: e.to_string(),
            },
        )
    }
}

/// A stored event this code cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read event {event_type}: {reason}")]
pub struct EventDecodeError {
    /// Its type.
    pub event_type: String,
    /// Why.
    pub reason: String,
}

/// Turns the data of one event type from schema `from` to `from + 1`, in place. Pure: it sees
/// only the event's own data.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type.
    pub event_type: &'static str,
    /// The version it reads.
    pub from: u32,
    /// The change.
    pub upcast: fn(&mut serde_json::Map<String, serde_json::Value>),
}

/// The schema version an event's metadata records (1 for events written before versions were
/// recorded).
pub fn schema_of(metadata: &serde_json::Value) -> u32 {
    metadata
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1)
}

/// An event's data in the current shape of `E`: borrowed when it is already, else upcast
/// step by step. Data from a newer schema than this code knows is an error, never guessed at.
pub fn upcast<'a, E: DomainEvent>(
    event_type: &str,
    metadata: &serde_json::Value,
    data: &'a serde_json::Value,
) -> Result<std::borrow::Cow<'a, serde_json::Value>, EventDecodeError> {
    let version = schema_of(metadata);
    if version > E::SCHEMA_VERSION {
        return Err(EventDecodeError {
            event_type: event_type.to_owned(),
            reason: format!(
                "written with schema {version}, newer than this server's {}",
                E::SCHEMA_VERSION
            ),
        });
    }
    let mut steps = E::UPCASTERS
        .iter()
        .filter(|u| u.event_type == event_type && u.from >= version)
        .peekable();
    if steps.peek().is_none() {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let serde_json::Value::Object(map) = data else {
        return Err(EventDecodeError {
            event_type: event_type.to_owned(),
            reason: "the data is not an object".to_owned(),
        });
    };
    let mut map = map.clone();
    for from in version..E::SCHEMA_VERSION {
        for u in E::UPCASTERS
            .iter()
            .filter(|u| u.event_type == event_type && u.from == from)
        {
            (u.upcast)(&mut map);
        }
    }
    Ok(std::borrow::Cow::Owned(serde_json::Value::Object(map)))
}

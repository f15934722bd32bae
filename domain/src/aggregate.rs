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
    /// The version of the data's shape, recorded in metadata for upcasters.
    const SCHEMA_VERSION: u32 = 1;

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

    /// Reads an event back from its type and data.
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

//! An event's JSON (its data or its metadata) as the store holds it: the text, decoded only when
//! something looks inside.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// An event's data or metadata.
///
/// Read from a store, it is the JSON text the store returned, checked but not decoded; the
/// first look inside (through [`Deref`] to [`Value`]) decodes it once, and the decoded value
/// is kept. Written out (serialized, [`Payload::text`]), it is that same text again. A reader
/// that only passes events on (a `$all` page, the live feed, the audit export) never builds a
/// `Value` for them. Made from a [`Value`], it is the reverse: the text is made when first asked
/// for.
///
/// Two payloads are equal when their JSON values are.
pub struct Payload {
    // At least one of the two is always set.
    text: OnceLock<Box<RawValue>>,
    value: OnceLock<Value>,
}

impl Payload {
    /// A payload of this JSON text, checked to be JSON.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self::from_raw)
    }

    /// A payload of this (already checked) JSON text.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self {
            text: OnceLock::from(raw),
            value: OnceLock::new(),
        }
    }

    /// The JSON text, compact.
    pub fn text(&self) -> &str {
        self.text
            .get_or_init(|| {
                let value = self
                    .value
                    .get()
                    .expect("a payload holds its text or its value");
                // A `Value` always serializes.
                serde_json::value::to_raw_value(value).expect("a JSON value serializes")
            })
            .get()
    }

    /// The JSON value, decoded now if it was not yet.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            let text = self
                .text
                .get()
                .expect("a payload holds its text or its value");
            // The text was checked to be JSON when the payload was made.
            serde_json::from_str(text.get()).expect("checked JSON text decodes")
        })
    }

    /// The JSON value, owned.
    pub fn into_value(mut self) -> Value {
        match self.value.take() {
            Some(value) => value,
            None => self.value().clone(),
        }
    }

    /// Whether it was decoded (for tests of the readers that should not decode).
    pub fn is_decoded(&self) -> bool {
        self.value.get().is_some()
    }
}

impl Deref for Payload {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self {
            text: OnceLock::new(),
            value: OnceLock::from(value),
        }
    }
}

impl From<Payload> for Value {
    fn from(payload: Payload) -> Self {
        payload.into_value()
    }
}

impl Clone for Payload {
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            value: self.value.clone(),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.value(), f)
    }
}

impl fmt::Display for Payload {
    /// The compact JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.text.get(), self.value.get()) {
            // serde_json writes the text as it is; nothing is decoded.
            (Some(text), _) => text.serialize(serializer),
            (None, Some(value)) => value.serialize(serializer),
            (None, None) => unreachable!("a payload holds its text or its value"),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from)
    }
}

/// In PostgreSQL, a payload is a `json` (or `jsonb`) value, read as text without decoding.
impl sqlx::Type<sqlx::Postgres> for Payload {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <sqlx::types::Json<Value> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <sqlx::types::Json<Value> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Payload {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let sqlx::types::Json(raw) =
            <sqlx::types::Json<Box<RawValue>> as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        Ok(Self::from_raw(raw))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Payload {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        sqlx::types::Json(self).encode_by_ref(buf)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payload_read_as_text_is_written_out_as_that_text_without_being_decoded() {
        let text = r#"{"b":[1,2.5,"x"],"a":{"nested":null}}"#;
        let payload = Payload::from_text(text.to_owned()).unwrap();
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        assert_eq!(payload.to_string(), text);
        assert!(!payload.is_decoded());
        // Looking inside decodes it, once.
        assert_eq!(payload["b"][1], json!(2.5));
        assert!(payload.is_decoded());
        assert_eq!(payload, json!({"a": {"nested": null}, "b": [1, 2.5, "x"]}));
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        assert!(Payload::from_text("{\"a\":".to_owned()).is_err());
        assert!(Payload::from_text("not json".to_owned()).is_err());
    }

    #[test]
    fn a_payload_made_from_a_value_gives_its_compact_text_and_round_trips() {
        let value = json!({"z": 1, "list": ["é", {"k": true}]});
        let payload = Payload::from(value.clone());
        assert_eq!(payload.text(), serde_json::to_string(&value).unwrap());
        let back: Payload = serde_json::from_str(payload.text()).unwrap();
        assert_eq!(back, payload);
        assert_eq!(back.clone().into_value(), value);
        assert_eq!(Value::from(payload), value);
    }

    #[test]
    fn payloads_are_equal_when_their_values_are_whatever_their_spelling() {
        let spaced = Payload::from_text(r#"{ "a" : 1, "b" : 2 }"#.to_owned()).unwrap();
        let compact = Payload::from_text(r#"{"b":2,"a":1}"#.to_owned()).unwrap();
        assert_eq!(spaced, compact);
        assert_ne!(spaced, Payload::from(json!({"a": 2})));
    }
}

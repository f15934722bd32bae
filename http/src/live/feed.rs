//! What the live feed sends: one message per event of the log, built once and shared by every
//! client that receives it.

use std::sync::{Arc, OnceLock};

use atelier_store::{Position, RecordedEvent};
use bytestring::ByteString;
use serde::Serialize;
use uuid::Uuid;

/// One event of the log as the live feed sends it.
#[derive(Debug)]
pub struct FeedEvent {
    /// The event.
    pub record: Arc<RecordedEvent>,
    /// The organization it belongs to (`metadata.org_id`); events without one are sent to nobody.
    pub org_id: Option<Uuid>,
    /// `<resource>:<verb>`, for example `build:started` (or what the context sends instead:
    /// GestVenv's `package:installed`).
    pub kind: String,
    /// The data sent when the context shapes it otherwise than the event's.
    shaped: Option<serde_json::Value>,
    /// The message, serialized once, by the first client that sends it.
    json: OnceLock<ByteString>,
}

/// The message's shape.
#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    event_type: &'a str,
    event_id: Uuid,
    stream: &'a str,
    revision: u64,
    position: Position,
    occurred_at: &'a serde_json::Value,
    data: Data<'a>,
}

/// A message's data: the context's shape, or the event's own, written as the store's text
/// (the hub never decodes an event's data to send it).
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Shaped(&'a serde_json::Value),
    Stored(&'a atelier_store::Payload),
}

/// The organization an event belongs to: its metadata's `org_id`.
pub fn org_of(record: &RecordedEvent) -> Option<Uuid> {
    record
        .metadata
        .get("org_id")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl FeedEvent {
    /// The feed's view of this event, or `None` for a category no context declared public
    /// ([`crate::contexts::Context::live`]): private by default.
    pub fn new(record: Arc<RecordedEvent>) -> Option<Arc<Self>> {
        let category = record.stream.category();
        let (context, public) = crate::contexts::live_category(category)?;
        let (kind, shaped) = match (context.live_message)(&record) {
            Some((kind, data)) => (kind.to_owned(), Some(data)),
            None => (kind_of(public.resource, &record.event_type), None),
        };
        Some(Arc::new(Self {
            org_id: org_of(&record),
            kind,
            shaped,
            record,
            json: OnceLock::new(),
        }))
    }

    /// The message, as JSON text (cheap to clone).
    pub fn json(&self) -> &ByteString {
        self.json.get_or_init(|| {
            let record = &self.record;
            // When the command was issued; the commit time for events appended without one.
            let created = serde_json::Value::String(
                record
                    .created
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            );
            let occurred_at = record
                .metadata
                .get("occurred_at")
                .filter(|v| v.is_string())
                .unwrap_or(&created);
            let message = Message {
                kind: &self.kind,
                event_type: &record.event_type,
                event_id: record.event_id,
                stream: record.stream.as_str(),
                revision: record.revision,
                position: record.position,
                occurred_at,
                data: match &self.shaped {
                    Some(shaped) => Data::Shaped(shaped),
                    None => Data::Stored(&record.data),
                },
            };
            // A JSON value always serializes.
            serde_json::to_string(&message).unwrap_or_default().into()
        })
    }

    /// Its place in the log.
    pub fn position(&self) -> Position {
        self.record.position
    }

    /// The id of the resource of this category it concerns, if any: the stream's own id for
    /// its category, a parent recorded in its metadata (`parents.<category>`, a build's
    /// project), or a `<category>_id` field of its data (a package event's `environment_id`).
    pub fn concerns(&self, category: &str, id: &str) -> bool {
        let stream = self.record.stream.as_str();
        if stream.len() == category.len() + 1 + id.len()
            && stream.starts_with(category)
            && stream.as_bytes()[category.len()] == b'-'
            && stream.ends_with(id)
        {
            return true;
        }
        let same = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s == id,
            Some(serde_json::Value::Number(n)) => n.to_string() == id,
            _ => false,
        };
        if same(
            self.record
                .metadata
                .get("parents")
                .and_then(|p| p.get(category)),
        ) {
            return true;
        }
        let field = format!("{category}_id");
        same(self.record.data.get(field.as_str()))
    }
}

/// The stream category of a resource the API names (`organization` → `org`; a category is
/// its own name too).
pub fn category_named(resource: &str) -> &str {
    crate::contexts::live_categories()
        .find(|c| c.resource == resource)
        .map_or(resource, |c| c.category)
}

/// `<category>:<verb>` for an event type: the type without the category's own name in front,
/// in snake case (`build` + `BuildStarted` → `build:started`; `project` +
/// `ProjectBuildCommandChanged` → `project:build_command_changed`).
pub fn kind_of(category: &str, event_type: &str) -> String {
    let mut chars = category.chars();
    let pascal: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    let verb = event_type
        .strip_prefix(pascal.as_str())
        .filter(|rest| !rest.is_empty())
        .unwrap_or(event_type);
    let mut out = String::with_capacity(category.len() + 1 + verb.len() + 4);
    out.push_str(category);
    out.push(':');
    for (i, c) in verb.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_store::StreamName;
    use serde_json::json;

    fn record(
        stream: &str,
        ty: &str,
        data: serde_json::Value,
        metadata: serde_json::Value,
    ) -> Arc<RecordedEvent> {
        Arc::new(RecordedEvent {
            event_id: Uuid::from_u128(7),
            event_type: ty.to_owned(),
            data: data.into(),
            metadata: metadata.into(),
            stream: StreamName::new(stream).unwrap(),
            revision: 2,
            position: Position::new(10, 3),
            created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        })
    }

    #[test]
    fn an_event_type_becomes_its_resource_and_verb_in_snake_case() {
        assert_eq!(kind_of("build", "BuildStarted"), "build:started");
        assert_eq!(kind_of("project", "ProjectCreated"), "project:created");
        assert_eq!(
            kind_of("project", "ProjectBuildCommandChanged"),
            "project:build_command_changed"
        );
        assert_eq!(
            kind_of("camera", "MotionDetected"),
            "camera:motion_detected"
        );
        assert_eq!(kind_of("project", "Project"), "project:project");
    }

    #[test]
    fn organization_events_are_named_for_the_organization_resource_and_reach_its_channels() {
        let id = "00000000-0000-0000-0000-000000000007";
        let org = json!({"org_id": Uuid::from_u128(1)});
        let added = FeedEvent::new(record(
            &format!("org-{id}"),
            "MemberAdded",
            json!({}),
            org.clone(),
        ))
        .unwrap();
        assert_eq!(added.kind, "organization:member_added");
        let created = FeedEvent::new(record(
            &format!("org-{id}"),
            "OrganizationCreated",
            json!({}),
            org,
        ))
        .unwrap();
        assert_eq!(created.kind, "organization:created");
        for name in [
            format!("organization:{id}"),
            "organizations".to_owned(),
            "category:organization".to_owned(),
            "type:organization:member_added".to_owned(),
        ] {
            let channel = super::super::channels::Channel::parse(&name).unwrap();
            assert!(channel.matches(&added), "{name}");
        }
    }

    #[test]
    fn a_message_carries_the_event_and_its_place_in_the_log() {
        let org = Uuid::from_u128(1);
        let e = FeedEvent::new(record(
            "build-00000000-0000-0000-0000-000000000002",
            "BuildStarted",
            json!({"runner": "r1"}),
            json!({"org_id": org, "occurred_at": "2026-11-23T10:00:00.000001Z"}),
        ))
        .unwrap();
        assert_eq!(e.org_id, Some(org));
        let v: serde_json::Value = serde_json::from_str(e.json()).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "build:started",
                "event_type": "BuildStarted",
                "event_id": Uuid::from_u128(7),
                "stream": "build-00000000-0000-0000-0000-000000000002",
                "revision": 2,
                "position": "10-3",
                "occurred_at": "2026-11-23T10:00:00.000001Z",
                "data": {"runner": "r1"},
            })
        );
    }

    #[test]
    fn a_message_copies_the_stored_data_as_it_is_without_decoding_it() {
        let org = Uuid::from_u128(1);
        let stored = r#"{"name":"api","tags":["a","b"],"n":1.5}"#;
        let record = Arc::new(RecordedEvent {
            data: atelier_store::Payload::from_text(stored.to_owned()).unwrap(),
            ..(*record(
                "project-p1",
                "ProjectUpdated",
                json!({}),
                json!({"org_id": org}),
            ))
            .clone()
        });
        let e = FeedEvent::new(record.clone()).unwrap();
        assert!(e.json().contains(&format!(r#""data":{stored}"#)));
        assert!(
            !record.data.is_decoded(),
            "the hub decoded the event's data"
        );
    }

    #[test]
    fn internal_streams_are_never_sent() {
        for (stream, event_type) in [
            ("reservation-project-name-x", "Reserved"),
            (
                "session-00000000-0000-0000-0000-000000000001",
                "SessionStarted",
            ),
            (
                "apikey-00000000-0000-0000-0000-000000000001",
                "ApiKeyCreated",
            ),
        ] {
            let org = json!({"org_id": Uuid::from_u128(1)});
            let e = record(stream, event_type, json!({}), org.clone());
            assert!(FeedEvent::new(e).is_none(), "{stream}");
            // The same event in a resource's stream is sent.
            let e = record("project-p1", event_type, json!({}), org);
            assert!(FeedEvent::new(e).is_some());
        }
    }

    #[test]
    fn a_category_no_context_declared_is_private() {
        let org = json!({"org_id": Uuid::from_u128(1)});
        let e = record("invoice-i1", "InvoiceIssued", json!({}), org.clone());
        assert!(
            FeedEvent::new(e).is_none(),
            "an undeclared category is not sent"
        );
        for public in crate::contexts::live_categories() {
            let e = record(
                &format!("{}-x1", public.category),
                "Created",
                json!({}),
                org.clone(),
            );
            assert!(
                FeedEvent::new(e).is_some(),
                "{} is declared",
                public.category
            );
        }
    }

    #[test]
    fn an_event_concerns_its_stream_its_recorded_parents_and_ids_in_its_data() {
        let e = FeedEvent::new(record(
            "build-b1",
            "BuildStarted",
            json!({"environment_id": "env-7", "camera_id": 3}),
            json!({"parents": {"project": "p1"}}),
        ))
        .unwrap();
        assert!(e.concerns("build", "b1"));
        assert!(!e.concerns("build", "b"));
        assert!(e.concerns("project", "p1"));
        assert!(!e.concerns("project", "p2"));
        assert!(e.concerns("environment", "env-7"));
        assert!(e.concerns("camera", "3"));
        assert!(!e.concerns("camera", "4"));
    }
}

//! A detection (Sentinel's "event"; the word event belongs to the log): something a detector
//! saw on a camera — its type, severity, confidence, where in the frame, a snapshot — and what
//! people did about it: notes, and acknowledgements, each with who and when (Frigate keeps one
//! boolean; the history is kept here, so the time to acknowledge can be measured).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::{InvalidValue, invalid, text};
use crate::{Aggregate, DomainEvent};

/// Longest notes, in characters.
pub const MAX_NOTES_CHARS: usize = 2000;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// What was detected: Sentinel's `EventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionType {
    /// A person.
    Person,
    /// A vehicle.
    Vehicle,
    /// An animal.
    Animal,
    /// Someone where nobody should be.
    Intrusion,
    /// A person falling.
    Fall,
    /// Something moved (the motion detector).
    Motion,
    /// Fire.
    Fire,
    /// Smoke.
    Smoke,
    /// Someone staying too long.
    Loitering,
    /// A package left or taken.
    Package,
    /// Anything else an external detector reports.
    Other,
}

impl DetectionType {
    /// Every type, in the API's spelling.
    pub const ALL: [DetectionType; 11] = [
        Self::Person,
        Self::Vehicle,
        Self::Animal,
        Self::Intrusion,
        Self::Fall,
        Self::Motion,
        Self::Fire,
        Self::Smoke,
        Self::Loitering,
        Self::Package,
        Self::Other,
    ];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Vehicle => "vehicle",
            Self::Animal => "animal",
            Self::Intrusion => "intrusion",
            Self::Fall => "fall",
            Self::Motion => "motion",
            Self::Fire => "fire",
            Self::Smoke => "smoke",
            Self::Loitering => "loitering",
            Self::Package => "package",
            Self::Other => "other",
        }
    }

    /// Parses the API's spelling.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                invalid(
                    field,
                    format!(
                        "must be one of {}",
                        Self::ALL.map(DetectionType::as_str).join(", ")
                    ),
                )
            })
    }

    /// The severity a detection of this type has when its detector does not say.
    pub fn default_severity(self) -> Severity {
        match self {
            Self::Fire | Self::Smoke | Self::Fall => Severity::Critical,
            Self::Intrusion => Severity::High,
            Self::Person | Self::Loitering => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

/// How serious a detection is: Sentinel's `EventSeverity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, from the least.
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses the API's spelling.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| invalid(field, "must be one of low, medium, high, critical"))
    }
}

/// A confidence, from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Confidence(f64);

impl Eq for Confidence {}

impl Confidence {
    /// Parses a confidence: a finite number from 0 to 1.
    pub fn parse(field: &'static str, value: f64) -> Result<Self, InvalidValue> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(invalid(field, "must be a number from 0 to 1"))
        }
    }

    /// Its value.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Where in the frame, as shares of its width and height (0 to 1), so it holds at any size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

impl Eq for BoundingBox {}

impl BoundingBox {
    /// Checks a box: every side within the frame, a width and height above 0.
    pub fn parse(x: f64, y: f64, width: f64, height: f64) -> Result<Self, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let share = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        for (field, v) in [("bbox.x", x), ("bbox.y", y)] {
            if !share(v) {
                errors.push(invalid(field, "must be a share of the frame, from 0 to 1"));
            }
        }
        for (field, v) in [("bbox.width", width), ("bbox.height", height)] {
            if !share(v) || v == 0.0 {
                errors.push(invalid(
                    field,
                    "must be a share of the frame, above 0 and at most 1",
                ));
            }
        }
        // A hair of rounding is not an error.
        if errors.is_empty() && (x + width > 1.000_001 || y + height > 1.000_001) {
            errors.push(invalid(
                "bbox",
                "must lie within the frame (x + width ≤ 1, y + height ≤ 1)",
            ));
        }
        if errors.is_empty() {
            Ok(Self {
                x,
                y,
                width,
                height,
            })
        } else {
            Err(errors)
        }
    }
}

/// A detection's snapshot: a JPEG kept beside the log (its bytes are never in an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The snapshot's id in the snapshot store.
    pub id: Uuid,
    /// Its size in bytes.
    pub bytes: u32,
}

/// Who reported a detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A detector of the camera's own pipeline (`motion`).
    Pipeline {
        /// The detector's name.
        detector: String,
    },
    /// An external detector, through the API.
    Api,
}

/// Parses notes: up to 2000 characters of visible text (may be empty).
pub fn parse_notes(raw: &str) -> Result<String, InvalidValue> {
    text("notes", raw, 0, MAX_NOTES_CHARS)
}

/// Parses a description: up to 500 characters of visible text (may be empty).
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    text("description", raw, 0, MAX_DESCRIPTION_CHARS)
}

/// One person's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who (a user's id).
    pub by: Uuid,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a live detection holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectionData {
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The camera that saw it.
    pub camera_id: Uuid,
    /// What was seen.
    pub detection_type: DetectionType,
    /// How serious it is.
    pub severity: Severity,
    /// How sure the detector is.
    pub confidence: Confidence,
    /// Where in the frame.
    pub bbox: Option<BoundingBox>,
    /// The frame, if kept.
    pub snapshot: Option<Snapshot>,
    /// What the detector said about it.
    pub description: String,
    /// Who reported it.
    pub source: Source,
    /// When it was seen.
    pub occurred_at: DateTime<Utc>,
    /// People's notes.
    pub notes: String,
    /// Who acknowledged it and when, in order; one each at most.
    pub acknowledgements: Vec<Acknowledgement>,
}

impl DetectionData {
    /// Whether anyone acknowledged it.
    pub fn acknowledged(&self) -> bool {
        !self.acknowledgements.is_empty()
    }
}

/// The detection aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Detection {
    /// Never recorded.
    #[default]
    Absent,
    /// Recorded and not deleted.
    Present(Box<DetectionData>),
    /// Deleted.
    Deleted {
        /// Its organization.
        org_id: Uuid,
    },
}

impl Detection {
    /// The live detection, if any.
    pub fn present(&self) -> Option<&DetectionData> {
        match self {
            Detection::Present(d) => Some(d),
            _ => None,
        }
    }

    fn owned_by(&self, org_id: Uuid) -> Result<&DetectionData, DetectionError> {
        self.present()
            .filter(|d| d.org_id == org_id)
            .ok_or(DetectionError::NotFound)
    }
}

/// A new detection, as a detector reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDetection {
    /// Its id.
    pub detection_id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The camera (of the organization: the service checks).
    pub camera_id: Uuid,
    /// What was seen.
    pub detection_type: DetectionType,
    /// How serious.
    pub severity: Severity,
    /// How sure.
    pub confidence: Confidence,
    /// Where.
    pub bbox: Option<BoundingBox>,
    /// The frame, stored beforehand.
    pub snapshot: Option<Snapshot>,
    /// What the detector said.
    pub description: String,
    /// Who reported it.
    pub source: Source,
    /// When it was seen.
    pub occurred_at: DateTime<Utc>,
}

/// What can be asked of a detection; every command names the organization acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectionCommand {
    /// Record it.
    Record(Box<NewDetection>),
    /// Replace its notes.
    Annotate {
        /// The organization acting.
        org_id: Uuid,
        /// The notes.
        notes: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A person acknowledges it (again: nothing new).
    Acknowledge {
        /// The organization acting.
        org_id: Uuid,
        /// Who.
        by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// A person withdraws their acknowledgement (none: nothing new).
    Withdraw {
        /// The organization acting.
        org_id: Uuid,
        /// Who.
        by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Delete it.
    Delete {
        /// The organization acting.
        org_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What happens to detections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DetectionEvent {
    /// Something was detected.
    DetectionRecorded {
        /// Its id.
        detection_id: Uuid,
        /// Its organization.
        org_id: Uuid,
        /// The camera.
        camera_id: Uuid,
        /// What was seen (`type` in the API).
        detection_type: DetectionType,
        /// How serious.
        severity: Severity,
        /// How sure.
        confidence: Confidence,
        /// Where.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bbox: Option<BoundingBox>,
        /// The frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<Snapshot>,
        /// What the detector said.
        #[serde(default)]
        description: String,
        /// Who reported it.
        source: Source,
        /// When it was seen.
        occurred_at: DateTime<Utc>,
    },
    /// Its notes were replaced.
    DetectionAnnotated {
        /// Its id.
        detection_id: Uuid,
        /// The notes.
        notes: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A person acknowledged it.
    DetectionAcknowledged {
        /// Its id.
        detection_id: Uuid,
        /// Who.
        by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// A person withdrew their acknowledgement.
    DetectionAcknowledgementWithdrawn {
        /// Its id.
        detection_id: Uuid,
        /// Who.
        by: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// It was deleted.
    DetectionDeleted {
        /// Its id.
        detection_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DetectionEvent {}

/// Why a detection command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectionError {
    /// A detection with this id exists (or existed).
    #[error("the detection already exists")]
    AlreadyExists,
    /// No such detection in this organization.
    #[error("the detection does not exist")]
    NotFound,
}

impl Aggregate for Detection {
    type Command = DetectionCommand;
    type Event = DetectionEvent;
    type Error = DetectionError;
    const CATEGORY: &'static str = "detection";

    fn decide(&self, command: DetectionCommand) -> Result<Vec<DetectionEvent>, DetectionError> {
        use DetectionCommand as C;
        use DetectionEvent as E;
        match command {
            C::Record(new) => match self {
                Detection::Absent => {
                    let n = *new;
                    Ok(vec![E::DetectionRecorded {
                        detection_id: n.detection_id,
                        org_id: n.org_id,
                        camera_id: n.camera_id,
                        detection_type: n.detection_type,
                        severity: n.severity,
                        confidence: n.confidence,
                        bbox: n.bbox,
                        snapshot: n.snapshot,
                        description: n.description,
                        source: n.source,
                        occurred_at: n.occurred_at,
                    }])
                }
                _ => Err(DetectionError::AlreadyExists),
            },
            C::Annotate { org_id, notes, at } => {
                let d = self.owned_by(org_id)?;
                if d.notes == notes {
                    return Ok(vec![]);
                }
                Ok(vec![E::DetectionAnnotated {
                    detection_id: d.id,
                    notes,
                    at,
                }])
            }
            C::Acknowledge { org_id, by, at } => {
                let d = self.owned_by(org_id)?;
                if d.acknowledgements.iter().any(|a| a.by == by) {
                    return Ok(vec![]);
                }
                Ok(vec![E::DetectionAcknowledged {
                    detection_id: d.id,
                    by,
                    at,
                }])
            }
            C::Withdraw { org_id, by, at } => {
                let d = self.owned_by(org_id)?;
                if !d.acknowledgements.iter().any(|a| a.by == by) {
                    return Ok(vec![]);
                }
                Ok(vec![E::DetectionAcknowledgementWithdrawn {
                    detection_id: d.id,
                    by,
                    at,
                }])
            }
            C::Delete { org_id, at } => {
                let d = self.owned_by(org_id)?;
                Ok(vec![E::DetectionDeleted {
                    detection_id: d.id,
                    at,
                }])
            }
        }
    }

    fn evolve(self, event: &DetectionEvent) -> Self {
        use DetectionEvent as E;
        match (self, event) {
            (
                Detection::Absent,
                E::DetectionRecorded {
                    detection_id,
                    org_id,
                    camera_id,
                    detection_type,
                    severity,
                    confidence,
                    bbox,
                    snapshot,
                    description,
                    source,
                    occurred_at,
                },
            ) => Detection::Present(Box::new(DetectionData {
                id: *detection_id,
                org_id: *org_id,
                camera_id: *camera_id,
                detection_type: *detection_type,
                severity: *severity,
                confidence: *confidence,
                bbox: *bbox,
                snapshot: *snapshot,
                description: description.clone(),
                source: source.clone(),
                occurred_at: *occurred_at,
                notes: String::new(),
                acknowledgements: Vec::new(),
            })),
            (Detection::Present(mut d), event) => {
                match event {
                    E::DetectionRecorded { .. } => {}
                    E::DetectionAnnotated { notes, .. } => d.notes = notes.clone(),
                    E::DetectionAcknowledged { by, at, .. } => {
                        d.acknowledgements
                            .push(Acknowledgement { by: *by, at: *at });
                    }
                    E::DetectionAcknowledgementWithdrawn { by, .. } => {
                        d.acknowledgements.retain(|a| a.by != *by);
                    }
                    E::DetectionDeleted { .. } => return Detection::Deleted { org_id: d.org_id },
                }
                Detection::Present(d)
            }
            (state, _) => state,
        }
    }

    fn parents(&self) -> Vec<(&'static str, Uuid)> {
        self.present()
            .map(|d| vec![("camera", d.camera_id)])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    const DET: Uuid = Uuid::from_u128(1);
    const ORG: Uuid = Uuid::from_u128(2);
    const CAM: Uuid = Uuid::from_u128(3);
    const ALICE: Uuid = Uuid::from_u128(10);
    const BOB: Uuid = Uuid::from_u128(11);

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn recorded() -> DetectionEvent {
        DetectionEvent::DetectionRecorded {
            detection_id: DET,
            org_id: ORG,
            camera_id: CAM,
            detection_type: DetectionType::Motion,
            severity: Severity::Low,
            confidence: Confidence::parse("confidence", 0.8).unwrap(),
            bbox: Some(BoundingBox::parse(0.1, 0.2, 0.3, 0.4).unwrap()),
            snapshot: None,
            description: String::new(),
            source: Source::Pipeline {
                detector: "motion".into(),
            },
            occurred_at: t(0),
        }
    }

    fn acked(by: Uuid, s: i64) -> DetectionEvent {
        DetectionEvent::DetectionAcknowledged {
            detection_id: DET,
            by,
            at: t(s),
        }
    }

    #[test]
    fn each_person_acknowledges_once_with_who_and_when() {
        given::<Detection>([recorded()])
            .when(DetectionCommand::Acknowledge {
                org_id: ORG,
                by: ALICE,
                at: t(30),
            })
            .then([acked(ALICE, 30)]);
        given::<Detection>([recorded(), acked(ALICE, 30)])
            .when(DetectionCommand::Acknowledge {
                org_id: ORG,
                by: ALICE,
                at: t(40),
            })
            .then([]);
        given::<Detection>([recorded(), acked(ALICE, 30)])
            .when(DetectionCommand::Acknowledge {
                org_id: ORG,
                by: BOB,
                at: t(50),
            })
            .then([acked(BOB, 50)]);
        let g = given::<Detection>([recorded(), acked(ALICE, 30), acked(BOB, 50)]);
        let d = g.state().present().unwrap();
        assert!(d.acknowledged());
        assert_eq!(
            d.acknowledgements,
            [
                Acknowledgement {
                    by: ALICE,
                    at: t(30)
                },
                Acknowledgement { by: BOB, at: t(50) }
            ]
        );
    }

    #[test]
    fn withdrawing_removes_only_ones_own_acknowledgement() {
        let withdrawn = DetectionEvent::DetectionAcknowledgementWithdrawn {
            detection_id: DET,
            by: ALICE,
            at: t(60),
        };
        given::<Detection>([recorded(), acked(ALICE, 30)])
            .when(DetectionCommand::Withdraw {
                org_id: ORG,
                by: ALICE,
                at: t(60),
            })
            .then([withdrawn.clone()]);
        given::<Detection>([recorded(), acked(ALICE, 30)])
            .when(DetectionCommand::Withdraw {
                org_id: ORG,
                by: BOB,
                at: t(60),
            })
            .then([]);
        let g = given::<Detection>([recorded(), acked(ALICE, 30), withdrawn]);
        assert!(!g.state().present().unwrap().acknowledged());
    }

    #[test]
    fn another_organization_does_not_find_a_detection_and_a_deleted_one_is_gone() {
        given::<Detection>([recorded()])
            .when(DetectionCommand::Annotate {
                org_id: Uuid::from_u128(99),
                notes: "x".into(),
                at: t(1),
            })
            .then_error(DetectionError::NotFound);
        let deleted = DetectionEvent::DetectionDeleted {
            detection_id: DET,
            at: t(2),
        };
        given::<Detection>([recorded(), deleted])
            .when(DetectionCommand::Acknowledge {
                org_id: ORG,
                by: ALICE,
                at: t(3),
            })
            .then_error(DetectionError::NotFound);
        given::<Detection>([recorded()])
            .when(DetectionCommand::Annotate {
                org_id: ORG,
                notes: String::new(),
                at: t(1),
            })
            .then([]);
    }

    #[test]
    fn values_out_of_range_are_refused_with_their_field() {
        assert!(Confidence::parse("confidence", 1.5).is_err());
        assert!(Confidence::parse("confidence", f64::NAN).is_err());
        assert!(Confidence::parse("confidence", 0.0).is_ok());
        assert_eq!(
            DetectionType::parse("type", "ufo").unwrap_err().field,
            "type"
        );
        assert_eq!(
            DetectionType::parse("type", "fall"),
            Ok(DetectionType::Fall)
        );
        assert!(Severity::parse("severity", "urgent").is_err());
        let errors = BoundingBox::parse(-0.1, 0.0, 0.0, 2.0).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["bbox.x", "bbox.width", "bbox.height"]);
        assert_eq!(
            BoundingBox::parse(0.8, 0.0, 0.5, 0.5).unwrap_err()[0].field,
            "bbox"
        );
        assert_eq!(DetectionType::Fire.default_severity(), Severity::Critical);
    }

    #[test]
    fn a_detection_belongs_to_its_camera() {
        let g = given::<Detection>([recorded()]);
        assert_eq!(g.state().parents(), vec![("camera", CAM)]);
    }
}

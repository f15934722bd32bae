//! A consultation of the assistant that changes no stack (`/llm/analyze`, `/llm/troubleshoot`,
//! `/llm/optimize`): recorded all the same, so that the audit says who asked what of which
//! engine and model, and what it answered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Aggregate, DomainEvent};

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consulted {
    /// Its id.
    pub consultation_id: Uuid,
    /// The organization.
    pub org_id: Uuid,
    /// `analyze`, `troubleshoot` or `optimize`.
    pub kind: String,
    /// The engine that answered: `offline` or `llm`.
    pub engine: String,
    /// The model that answered (`None`: the offline engine).
    pub model: Option<String>,
    /// SHA-256 of the request (hex).
    pub request_hash: String,
    /// Why the LLM engine's answer was not used, when the offline engine answered instead.
    pub fallback: Option<String>,
    /// The deployment it was about, if any.
    pub deployment_id: Option<Uuid>,
    /// How many findings, causes or recommendations it answered.
    pub answers: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// A consultation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Consultation {
    /// Not recorded.
    #[default]
    Absent,
    /// Recorded.
    Recorded(Box<Consulted>),
}

/// Record a consultation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record(pub Consulted);

/// What happens to consultations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConsultationEvent {
    /// The assistant was consulted and answered.
    AssistantConsulted(Consulted),
}

impl DomainEvent for ConsultationEvent {}

/// Why a consultation is not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsultationError {
    /// It was, already.
    #[error("the consultation is already recorded")]
    AlreadyRecorded,
}

impl Aggregate for Consultation {
    type Command = Record;
    type Event = ConsultationEvent;
    type Error = ConsultationError;
    const CATEGORY: &'static str = "consultation";

    fn decide(
        &self,
        Record(consulted): Record,
    ) -> Result<Vec<ConsultationEvent>, ConsultationError> {
        match self {
            Consultation::Absent => Ok(vec![ConsultationEvent::AssistantConsulted(consulted)]),
            Consultation::Recorded(_) => Err(ConsultationError::AlreadyRecorded),
        }
    }

    fn evolve(self, event: &ConsultationEvent) -> Self {
        match event {
            ConsultationEvent::AssistantConsulted(c) => Consultation::Recorded(Box::new(c.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn consulted() -> Consulted {
        Consulted {
            consultation_id: Uuid::from_u128(1),
            org_id: Uuid::from_u128(2),
            kind: "troubleshoot".into(),
            engine: "offline".into(),
            model: None,
            request_hash: "00".repeat(32),
            fallback: None,
            deployment_id: None,
            answers: 1,
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn a_consultation_is_recorded_once() {
        given::<Consultation>([])
            .when(Record(consulted()))
            .then([ConsultationEvent::AssistantConsulted(consulted())]);
        given::<Consultation>([ConsultationEvent::AssistantConsulted(consulted())])
            .when(Record(consulted()))
            .then_error(ConsultationError::AlreadyRecorded);
    }
}

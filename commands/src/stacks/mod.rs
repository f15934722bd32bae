//! Stacks (WindFlow): the stack service ([`service`]), the assistant and its engines
//! ([`assistant`]), and the record of consultations that change no stack.

pub mod assistant;
pub mod service;

use std::sync::Arc;

use atelier_domain::stacks::consultation::{Consultation, Consulted, Record};
use atelier_store::EventStore;

use crate::handler::{CommandContext, CommandError, Written, execute, stream_of};

/// The stacks context's services.
#[derive(Clone)]
pub struct StacksServices {
    /// Stacks.
    pub stacks: service::StackService,
    /// The assistant.
    pub assistant: assistant::Assistant,
    store: Arc<dyn EventStore>,
}

impl StacksServices {
    /// Services over `store`, with this assistant.
    pub fn new(store: Arc<dyn EventStore>, assistant: assistant::Assistant) -> Self {
        Self {
            stacks: service::StackService::new(store.clone()),
            assistant,
            store,
        }
    }

    /// Records a consultation of the assistant (it has its own stream).
    pub async fn record_consultation(
        &self,
        ctx: &CommandContext,
        consulted: Consulted,
    ) -> Result<
        Written<Consultation>,
        CommandError<atelier_domain::stacks::consultation::ConsultationError>,
    > {
        let stream = stream_of::<Consultation>(consulted.consultation_id);
        execute::<Consultation>(self.store.as_ref(), &stream, ctx, None, Record(consulted)).await
    }
}

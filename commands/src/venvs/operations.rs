//! Operations: queued on a ready environment of the caller's, cancelled by its organization,
//! started, moved on and finished by a runner.

use std::sync::Arc;

use atelier_domain::venvs::environment::{EnvStatus, Environment};
use atelier_domain::venvs::operation::{
    Operation, OperationCommand, OperationError, OperationRequest, Outcome,
};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};

/// An operation command's error.
pub type OperationCommandError = CommandError<OperationError>;

/// Why an operation cannot be queued on an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No such live environment in the organization.
    #[error("the environment does not exist")]
    NoEnvironment,
    /// The environment could not be made.
    #[error("the environment is {} and not ready", .0.as_str())]
    NotReady(EnvStatus),
}

/// Writes operations.
#[derive(Clone)]
pub struct OperationService {
    store: Arc<dyn EventStore>,
}

impl OperationService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// An operation's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Operation>(id)
    }

    /// An operation as the log has it.
    pub async fn load(&self, id: Uuid) -> Result<(Operation, Option<u64>), OperationCommandError> {
        load::<Operation>(self.store.as_ref(), &Self::stream(id)).await
    }

    /// Queues an operation on an environment of the caller's organization that is ready or being
    /// made (not one that failed). It runs after the environment's earlier operations, its
    /// creation first (one at a time per environment, in the log's order).
    pub async fn queue(
        &self,
        ctx: &CommandContext,
        environment_id: Uuid,
        request: OperationRequest,
    ) -> Result<Result<Written<Operation>, QueueError>, OperationCommandError> {
        let (environment, _) = load::<Environment>(
            self.store.as_ref(),
            &stream_of::<Environment>(environment_id),
        )
        .await
        .map_err(|e| match e {
            CommandError::Store(e) => CommandError::Store(e),
            CommandError::Decode(e) => CommandError::Decode(e),
            other => CommandError::Conflict(other.to_string()),
        })?;
        let Some(env) = environment.visible_to(ctx.org_id) else {
            return Ok(Err(QueueError::NoEnvironment));
        };
        if env.status == EnvStatus::Failed {
            return Ok(Err(QueueError::NotReady(env.status)));
        }
        let id = Uuid::now_v7();
        let command = OperationCommand::Queue {
            operation_id: id,
            org_id: ctx.org_id,
            environment_id: Some(environment_id),
            request,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command)
            .await
            .map(Ok)
    }

    /// Queues an operation on no environment (the organization's cache).
    pub async fn queue_unattached(
        &self,
        ctx: &CommandContext,
        request: OperationRequest,
    ) -> Result<Written<Operation>, OperationCommandError> {
        let id = Uuid::now_v7();
        let command = OperationCommand::Queue {
            operation_id: id,
            org_id: ctx.org_id,
            environment_id: None,
            request,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Cancels a queued or running operation (a runner then kills its backend).
    pub async fn cancel(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Written<Operation>, OperationCommandError> {
        let command = OperationCommand::Cancel {
            org_id: ctx.org_id,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// A runner takes a queued operation (the append decides between runners).
    pub async fn start(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        runner: &str,
    ) -> Result<Written<Operation>, OperationCommandError> {
        let command = OperationCommand::Start {
            runner: runner.to_owned(),
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Records how far a running operation got.
    pub async fn progress(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        progress: u8,
        message: impl Into<String>,
    ) -> Result<Written<Operation>, OperationCommandError> {
        let command = OperationCommand::Progress {
            progress,
            message: message.into(),
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Records how a running operation ended.
    pub async fn finish(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        outcome: Outcome,
    ) -> Result<Written<Operation>, OperationCommandError> {
        let command = OperationCommand::Finish {
            outcome,
            at: ctx.occurred_at,
        };
        execute::<Operation>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }
}

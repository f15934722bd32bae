//! Environments: create (with the operation that makes it), update, activate, delete, expire,
//! and what the runner records (made, failed, the packages found). Names are unique within an
//! organization among the live environments.

use std::sync::Arc;

use atelier_domain::venvs::environment::{
    Environment, EnvironmentCommand, EnvironmentError, NewEnvironment,
};
use atelier_domain::venvs::operation::{Operation, OperationCommand, OperationRequest};
use atelier_domain::venvs::values::EnvName;
use atelier_store::{EventStore, StreamName};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::operations::OperationCommandError;
use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// An environment command's error.
pub type EnvironmentCommandError = CommandError<EnvironmentError>;

fn name_reservation(org_id: Uuid, name: &EnvName) -> StreamName {
    reservation_stream("environment-name", org_id, &name.key())
}

/// A new environment as written: the environment and the operation that makes it.
pub struct Created {
    /// The environment.
    pub environment: Written<Environment>,
    /// The operation.
    pub operation: Result<Written<Operation>, OperationCommandError>,
}

/// Writes environments.
#[derive(Clone)]
pub struct EnvironmentService {
    store: Arc<dyn EventStore>,
}

impl EnvironmentService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// An environment's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Environment>(id)
    }

    /// An environment as the log has it.
    pub async fn load(
        &self,
        id: Uuid,
    ) -> Result<(Environment, Option<u64>), EnvironmentCommandError> {
        load::<Environment>(self.store.as_ref(), &Self::stream(id)).await
    }

    /// The live environment of the organization this names: its id, or its name (found through
    /// the name's reservation, so a name resolves as soon as its environment is created).
    pub async fn resolve(
        &self,
        org_id: Uuid,
        id_or_name: &str,
    ) -> Result<Option<Uuid>, EnvironmentCommandError> {
        let id = match Uuid::try_parse(id_or_name) {
            Ok(id) => id,
            Err(_) => {
                let Ok(name) = EnvName::parse(id_or_name) else {
                    return Ok(None);
                };
                let stream = name_reservation(org_id, &name);
                match crate::reservation::holder(self.store.as_ref(), &stream).await? {
                    Some((holder, _)) => holder,
                    None => return Ok(None),
                }
            }
        };
        let (state, _) = self.load(id).await?;
        Ok(state.visible_to(org_id).map(|e| e.id))
    }

    /// Creates an environment and queues the operation that makes it (and installs its
    /// packages). The name is reserved first: a taken name is a conflict and writes nothing.
    /// Should the operation's append fail after the environment's, the runner queues it when it
    /// finds the environment still being created ([`EnvironmentService::ensure_creation`]).
    pub async fn create(
        &self,
        ctx: &CommandContext,
        new: NewEnvironment,
    ) -> Result<Created, EnvironmentCommandError> {
        let id = Uuid::now_v7();
        let operation_id = Uuid::now_v7();
        let key = new.name.key();
        let reservation = claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, &new.name),
            id,
            ctx,
            |e: &Environment| e.live().is_some_and(|e| e.name.key() == key),
            || {
                format!(
                    "an environment named {:?} already exists in this organization",
                    new.name.as_str()
                )
            },
        )
        .await?;
        let command = EnvironmentCommand::Create {
            environment_id: id,
            org_id: ctx.org_id,
            new,
            operation_id,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        let written =
            execute::<Environment>(self.store.as_ref(), &Self::stream(id), ctx, None, command)
                .await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        let environment = written?;
        let operation = queue_creation(self.store.as_ref(), ctx, id, operation_id).await;
        Ok(Created {
            environment,
            operation,
        })
    }

    /// Queues the operation that makes an environment still being created, if it is not in the
    /// log yet (after a crash between the two appends of [`EnvironmentService::create`]).
    pub async fn ensure_creation(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<(), OperationCommandError> {
        let Ok((Environment::Present(e), _)) = self.load(id).await else {
            return Ok(());
        };
        let mut ctx = ctx.clone();
        ctx.org_id = e.org_id;
        match queue_creation(self.store.as_ref(), &ctx, id, e.creation).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(
                atelier_domain::venvs::operation::OperationError::AlreadyExists,
            )) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Changes an environment's description.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        description: String,
    ) -> Result<Written<Environment>, EnvironmentCommandError> {
        let command = EnvironmentCommand::Update {
            org_id: ctx.org_id,
            description,
            at: ctx.occurred_at,
        };
        execute::<Environment>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await
    }

    /// Makes an environment the organization's active one.
    pub async fn activate(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Written<Environment>, EnvironmentCommandError> {
        let command = EnvironmentCommand::Activate {
            org_id: ctx.org_id,
            at: ctx.occurred_at,
        };
        execute::<Environment>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// Deletes an environment; its name is free again, its operations are cancelled and its
    /// directory is removed by the runner.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Environment>, EnvironmentCommandError> {
        let command = EnvironmentCommand::Delete {
            org_id: ctx.org_id,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        let written = execute::<Environment>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await?;
        self.release_name(&written).await;
        Ok(written)
    }

    /// Expires an ephemeral environment whose time has come.
    pub async fn expire(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Written<Environment>, EnvironmentCommandError> {
        let written = execute::<Environment>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            EnvironmentCommand::Expire { at },
        )
        .await?;
        self.release_name(&written).await;
        Ok(written)
    }

    async fn release_name(&self, written: &Written<Environment>) {
        if let (Some(before), None) = (written.previous.live(), written.state.live()) {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(before.org_id, &before.name),
                before.id,
            )
            .await;
        }
    }

    /// Records what the runner did or found.
    pub async fn record(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        command: EnvironmentCommand,
    ) -> Result<Written<Environment>, EnvironmentCommandError> {
        execute::<Environment>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }
}

async fn queue_creation(
    store: &dyn EventStore,
    ctx: &CommandContext,
    environment_id: Uuid,
    operation_id: Uuid,
) -> Result<Written<Operation>, OperationCommandError> {
    let command = OperationCommand::Queue {
        operation_id,
        org_id: ctx.org_id,
        environment_id: Some(environment_id),
        request: OperationRequest::CreateEnvironment,
        by: ctx.actor.clone(),
        at: ctx.occurred_at,
    };
    execute::<Operation>(
        store,
        &stream_of::<Operation>(operation_id),
        ctx,
        None,
        command,
    )
    .await
}

//! Stacks: create, describe, configure (a new version), mark deployed, delete, with names
//! unique within an organization.

use std::sync::Arc;

use atelier_domain::stacks::stack::{Origin, Stack, StackCommand, StackError, StackName};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// A stack command's error.
pub type StackCommandError = CommandError<StackError>;

/// A new stack's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStack {
    /// Its name.
    pub name: StackName,
    /// Its description.
    pub description: String,
    /// Its configuration (a compose mapping).
    pub configuration: serde_json::Value,
    /// Whether it passed validation.
    pub valid: bool,
    /// Who proposed it.
    pub origin: Origin,
}

/// A new version of a stack's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    /// The configuration.
    pub configuration: serde_json::Value,
    /// Whether it passed validation.
    pub valid: bool,
    /// Whether it is the assistant's optimization.
    pub llm_optimized: bool,
    /// Who proposed it.
    pub origin: Origin,
}

/// Writes stacks.
#[derive(Clone)]
pub struct StackService {
    store: Arc<dyn EventStore>,
}

fn name_reservation(org_id: Uuid, name: &StackName) -> StreamName {
    reservation_stream("stack-name", org_id, &name.key())
}

impl StackService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// A stack's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Stack>(id)
    }

    /// The stack as the log has it now (`None`: not one of this organization's).
    pub async fn get(
        &self,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<Option<(Stack, Option<u64>)>, StackCommandError> {
        let (stack, revision) = load::<Stack>(self.store.as_ref(), &Self::stream(id)).await?;
        Ok(stack
            .present()
            .is_some_and(|s| s.org_id == org_id)
            .then_some((stack, revision)))
    }

    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        name: &StackName,
    ) -> Result<StreamName, StackCommandError> {
        let key = name.key();
        claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, name),
            owner,
            ctx,
            |s: &Stack| s.present().is_some_and(|s| s.name.key() == key),
            || {
                format!(
                    "a stack named {:?} already exists in this organization",
                    name.as_str()
                )
            },
        )
        .await
    }

    /// Creates a stack with a new id.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        input: NewStack,
    ) -> Result<Written<Stack>, StackCommandError> {
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &input.name).await?;
        let command = StackCommand::Create {
            stack_id: id,
            org_id: ctx.org_id,
            name: input.name,
            description: input.description,
            configuration: input.configuration,
            valid: input.valid,
            origin: input.origin,
            at: ctx.occurred_at,
        };
        let written =
            execute::<Stack>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Changes a stack's name or description.
    pub async fn describe(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        name: Option<StackName>,
        description: Option<String>,
    ) -> Result<Written<Stack>, StackCommandError> {
        let stream = Self::stream(id);
        let (current, _) = load::<Stack>(self.store.as_ref(), &stream).await?;
        let current_key = match current.present() {
            Some(s) if s.org_id == ctx.org_id => s.name.key(),
            _ => return Err(CommandError::Rejected(StackError::NotFound)),
        };
        let new_reservation = match &name {
            Some(n) if n.key() != current_key => Some(self.reserve_name(ctx, id, n).await?),
            _ => None,
        };
        let command = StackCommand::Describe {
            org_id: ctx.org_id,
            name,
            description,
            at: ctx.occurred_at,
        };
        let written = execute::<Stack>(self.store.as_ref(), &stream, ctx, if_match, command).await;
        settle_key_change(self.store.as_ref(), id, &written, new_reservation, |w| {
            let (before, after) = (w.previous.present()?, w.state.present()?);
            (before.name.key() != after.name.key())
                .then(|| name_reservation(ctx.org_id, &before.name))
        })
        .await;
        written
    }

    /// Records a new version of a stack's configuration.
    pub async fn configure(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        version: NewVersion,
    ) -> Result<Written<Stack>, StackCommandError> {
        execute::<Stack>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            StackCommand::Configure {
                org_id: ctx.org_id,
                configuration: version.configuration,
                valid: version.valid,
                llm_optimized: version.llm_optimized,
                origin: version.origin,
                at: ctx.occurred_at,
            },
        )
        .await
    }

    /// Records that a version was deployed by `deployment_id`.
    pub async fn mark_deployed(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        version: u32,
        deployment_id: Uuid,
    ) -> Result<Written<Stack>, StackCommandError> {
        execute::<Stack>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            None,
            StackCommand::MarkDeployed {
                org_id: ctx.org_id,
                version,
                deployment_id,
                at: ctx.occurred_at,
            },
        )
        .await
    }

    /// Deletes a stack; its name is free again.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Stack>, StackCommandError> {
        let written = execute::<Stack>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            StackCommand::Delete {
                org_id: ctx.org_id,
                at: ctx.occurred_at,
            },
        )
        .await?;
        if let Some(before) = written.previous.present() {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(ctx.org_id, &before.name),
                id,
            )
            .await;
        }
        Ok(written)
    }
}

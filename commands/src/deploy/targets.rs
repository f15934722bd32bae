//! Targets: create, update and delete, with names unique within an organization.

use std::sync::Arc;

use atelier_domain::deploy::target::{
    Target, TargetCommand, TargetError, TargetFields, TargetName,
};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// A target command's error.
pub type TargetCommandError = CommandError<TargetError>;

fn name_reservation(org_id: Uuid, name: &TargetName) -> StreamName {
    reservation_stream("target-name", org_id, &name.key())
}

/// Creates, updates and deletes targets.
#[derive(Clone)]
pub struct TargetService {
    store: Arc<dyn EventStore>,
}

impl TargetService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// A target's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Target>(id)
    }

    /// A target as the log has it.
    pub async fn load(&self, id: Uuid) -> Result<(Target, Option<u64>), TargetCommandError> {
        load::<Target>(self.store.as_ref(), &Self::stream(id)).await
    }

    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        name: &TargetName,
    ) -> Result<StreamName, TargetCommandError> {
        let key = name.key();
        claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, name),
            owner,
            ctx,
            |t: &Target| t.active().is_some_and(|t| t.fields.name.key() == key),
            || {
                format!(
                    "a target named {:?} already exists in this organization",
                    name.as_str()
                )
            },
        )
        .await
    }

    /// Creates a target with a new id.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        fields: TargetFields,
    ) -> Result<Written<Target>, TargetCommandError> {
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &fields.name).await?;
        let command = TargetCommand::Create {
            target_id: id,
            org_id: ctx.org_id,
            fields,
            at: ctx.occurred_at,
        };
        let written =
            execute::<Target>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Replaces a target's fields.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        fields: TargetFields,
    ) -> Result<Written<Target>, TargetCommandError> {
        let (current, _) = self.load(id).await?;
        let current_key = current
            .visible_to(ctx.org_id)
            .map(|t| t.fields.name.key())
            .ok_or(CommandError::Rejected(TargetError::NotFound))?;
        let new_reservation = if fields.name.key() != current_key {
            Some(self.reserve_name(ctx, id, &fields.name).await?)
        } else {
            None
        };
        let command = TargetCommand::Update {
            org_id: ctx.org_id,
            fields,
            at: ctx.occurred_at,
        };
        let written = execute::<Target>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await;
        settle_key_change(self.store.as_ref(), id, &written, new_reservation, |w| {
            let (before, after) = (w.previous.active()?, w.state.active()?);
            (before.fields.name.key() != after.fields.name.key())
                .then(|| name_reservation(ctx.org_id, &before.fields.name))
        })
        .await;
        written
    }

    /// Deletes a target; its name is free again. Deployments that name it keep their history.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Target>, TargetCommandError> {
        let command = TargetCommand::Delete {
            org_id: ctx.org_id,
            at: ctx.occurred_at,
        };
        let written = execute::<Target>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await?;
        if let Some(before) = written.previous.active() {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(ctx.org_id, &before.fields.name),
                id,
            )
            .await;
        }
        Ok(written)
    }
}

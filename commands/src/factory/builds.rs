//! Build commands: trigger, restart and cancel (for people), start and finish (for the runner).

use std::sync::Arc;

use atelier_domain::factory::build::{Build, BuildAction, BuildError, Outcome};
use atelier_domain::factory::project::Project;
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};

/// A build command's error.
pub type BuildCommandError = CommandError<BuildError>;

/// Queues, cancels and records the life of builds.
#[derive(Clone)]
pub struct BuildService {
    store: Arc<dyn EventStore>,
}

impl BuildService {
    /// A service writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    /// A build's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Build>(id)
    }

    /// A build as the log has it, with its revision.
    pub async fn load(&self, id: Uuid) -> Result<(Build, Option<u64>), BuildCommandError> {
        load::<Build>(self.store.as_ref(), &Self::stream(id)).await
    }

    /// The project as it is now, if it is live in the caller's organization.
    async fn live_project(
        &self,
        ctx: &CommandContext,
        project_id: Uuid,
    ) -> Result<(Project, u64), BuildCommandError> {
        let (project, revision) =
            load::<Project>(self.store.as_ref(), &stream_of::<Project>(project_id))
                .await
                .map_err(|e| match e {
                    CommandError::Store(e) => CommandError::Store(e),
                    CommandError::Decode(e) => CommandError::Decode(e),
                    _ => CommandError::Rejected(BuildError::ProjectNotFound),
                })?;
        match (project.active(), revision) {
            (Some(p), Some(revision)) if p.org_id == ctx.org_id => Ok((project, revision)),
            _ => Err(CommandError::Rejected(BuildError::ProjectNotFound)),
        }
    }

    /// Queues a build of the project as it is now.
    pub async fn trigger(
        &self,
        ctx: &CommandContext,
        project_id: Uuid,
    ) -> Result<Written<Build>, BuildCommandError> {
        let (project, revision) = self.live_project(ctx, project_id).await?;
        let id = Uuid::now_v7();
        let action = project
            .trigger_build(revision, ctx.org_id, id, ctx.actor.clone(), ctx.occurred_at)
            .map_err(CommandError::Rejected)?;
        execute::<Build>(self.store.as_ref(), &Self::stream(id), ctx, None, action).await
    }

    /// Queues a new build that runs what a finished build ran, linked to it. The project must
    /// still exist.
    pub async fn restart(
        &self,
        ctx: &CommandContext,
        build_id: Uuid,
    ) -> Result<Written<Build>, BuildCommandError> {
        let (old, _) = self.load(build_id).await?;
        let id = Uuid::now_v7();
        let action = old
            .restart(ctx.org_id, id, ctx.actor.clone(), ctx.occurred_at)
            .map_err(CommandError::Rejected)?;
        if let BuildAction::Queue { project_id, .. } = &action {
            self.live_project(ctx, *project_id).await?;
        }
        execute::<Build>(self.store.as_ref(), &Self::stream(id), ctx, None, action).await
    }

    /// Cancels a queued or running build (the runner that runs it kills it).
    pub async fn cancel(
        &self,
        ctx: &CommandContext,
        build_id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Build>, BuildCommandError> {
        let action = BuildAction::Cancel {
            org_id: ctx.org_id,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        execute::<Build>(
            self.store.as_ref(),
            &Self::stream(build_id),
            ctx,
            if_match,
            action,
        )
        .await
    }

    /// A runner takes a queued build.
    pub async fn start(
        &self,
        ctx: &CommandContext,
        build_id: Uuid,
        runner: &str,
    ) -> Result<Written<Build>, BuildCommandError> {
        let action = BuildAction::Start {
            runner: runner.to_owned(),
            at: ctx.occurred_at,
        };
        execute::<Build>(
            self.store.as_ref(),
            &Self::stream(build_id),
            ctx,
            None,
            action,
        )
        .await
    }

    /// A runner reports how a build ended.
    pub async fn finish(
        &self,
        ctx: &CommandContext,
        build_id: Uuid,
        outcome: Outcome,
    ) -> Result<Written<Build>, BuildCommandError> {
        let action = BuildAction::Finish {
            outcome,
            at: ctx.occurred_at,
        };
        execute::<Build>(
            self.store.as_ref(),
            &Self::stream(build_id),
            ctx,
            None,
            action,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::{ProjectInput, ProjectService};
    use atelier_domain::factory::build::BuildStatus;
    use atelier_domain::factory::project::{ProjectName, RepoUrl};
    use atelier_store::memory::MemoryEventStore;

    async fn setup() -> (BuildService, ProjectService, CommandContext, Uuid) {
        let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
        let projects = ProjectService::new(store.clone());
        let ctx = CommandContext::new(Uuid::now_v7(), "user-1");
        let p = projects
            .create(
                &ctx,
                ProjectInput {
                    name: ProjectName::parse("Demo").unwrap(),
                    repo_url: RepoUrl::parse("https://example.com/r.git").unwrap(),
                    build_command: None,
                },
            )
            .await
            .unwrap();
        let id = p.state.active().unwrap().id;
        (BuildService::new(store), projects, ctx, id)
    }

    #[tokio::test]
    async fn a_trigger_queues_a_build_of_the_projects_current_revision() {
        let (builds, _, ctx, project) = setup().await;
        let w = builds.trigger(&ctx, project).await.unwrap();
        let b = w.state.data().unwrap();
        assert_eq!(b.status, BuildStatus::Queued);
        assert_eq!((b.project_id, b.project_revision), (project, 0));
        assert_eq!(b.triggered_by, "user-1");
    }

    #[tokio::test]
    async fn a_deleted_or_foreign_project_cannot_be_built_or_rebuilt() {
        let (builds, projects, ctx, project) = setup().await;
        let other = CommandContext::new(Uuid::now_v7(), "intruder");
        assert!(matches!(
            builds.trigger(&other, project).await,
            Err(CommandError::Rejected(BuildError::ProjectNotFound))
        ));
        let first = builds.trigger(&ctx, project).await.unwrap();
        let id = first.state.data().unwrap().id;
        builds.cancel(&ctx, id, None).await.unwrap();
        projects.delete(&ctx, project, None).await.unwrap();
        assert!(matches!(
            builds.trigger(&ctx, project).await,
            Err(CommandError::Rejected(BuildError::ProjectNotFound))
        ));
        assert!(matches!(
            builds.restart(&ctx, id).await,
            Err(CommandError::Rejected(BuildError::ProjectNotFound))
        ));
    }

    #[tokio::test]
    async fn a_restart_makes_a_new_build_linked_to_the_finished_one() {
        let (builds, _, ctx, project) = setup().await;
        let first = builds.trigger(&ctx, project).await.unwrap();
        let id = first.state.data().unwrap().id;
        assert!(matches!(
            builds.restart(&ctx, id).await,
            Err(CommandError::Rejected(BuildError::NotFinished))
        ));
        builds.start(&ctx, id, "r").await.unwrap();
        builds.finish(&ctx, id, Outcome::Succeeded).await.unwrap();
        let again = builds.restart(&ctx, id).await.unwrap();
        let b = again.state.data().unwrap();
        assert_ne!(b.id, id);
        assert_eq!(b.restart_of, Some(id));
        assert_eq!(b.status, BuildStatus::Queued);
    }
}

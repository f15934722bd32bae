//! Projects: create, update and delete, with names unique within an organization, and the
//! policy on which repositories they may name.

use std::sync::Arc;

use atelier_domain::factory::project::{
    BuildCommand, Project, ProjectCommand, ProjectError, ProjectName, RepoUrl,
};
use atelier_domain::value::{InvalidValue, invalid};
use atelier_store::{EventStore, StreamName};
use uuid::Uuid;

use crate::handler::{
    CommandContext, CommandError, MAX_ATTEMPTS, Written, execute, load, load_guess, stream_of,
};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// A project command's error.
pub type ProjectCommandError = CommandError<ProjectError>;

/// Which repositories this server accepts and clones: remote ones always; ones on its own disk
/// (`file:` URLs) only where the operator allows them (`ATELIER_ALLOW_LOCAL_REPOS`), since a
/// project could otherwise name `/etc` or another tenant's build directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoPolicy {
    /// Whether `file:` repositories are accepted.
    pub allow_local: bool,
}

impl RepoPolicy {
    /// The policy that accepts local repositories too.
    pub const ALLOW_LOCAL: Self = Self { allow_local: true };

    /// Refuses a repository this policy does not accept, as an error on the field `repo`.
    pub fn check(&self, repo: &RepoUrl) -> Result<(), InvalidValue> {
        if repo.is_local() && !self.allow_local {
            return Err(invalid(
                "repo",
                "is on the server's own disk; this server takes only remote repositories (an \
                 operator allows local ones with ATELIER_ALLOW_LOCAL_REPOS=true)",
            ));
        }
        Ok(())
    }

    /// Parses a repository as stored (a build's copy of its project's) and checks it: what a
    /// build driver must do before cloning it.
    pub fn check_stored(&self, raw: &str) -> Result<RepoUrl, InvalidValue> {
        let repo = RepoUrl::parse(raw)?;
        self.check(&repo)?;
        Ok(repo)
    }

    /// The protocols git may use for this policy (`GIT_ALLOW_PROTOCOL`: also what submodules
    /// and redirects may reach). Never `ext` or `fd`.
    pub fn git_protocols(&self) -> &'static str {
        if self.allow_local {
            "https:http:ssh:git:file"
        } else {
            "https:http:ssh:git"
        }
    }
}

/// A project's fields, as a create or update gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInput {
    /// Its name.
    pub name: ProjectName,
    /// Its repository.
    pub repo_url: RepoUrl,
    /// Its build command.
    pub build_command: Option<BuildCommand>,
}

/// Creates, updates and deletes projects, keeping names unique within an organization and
/// repositories within the [`RepoPolicy`].
#[derive(Clone)]
pub struct ProjectService {
    store: Arc<dyn EventStore>,
    repos: RepoPolicy,
}

fn name_reservation(org_id: Uuid, name: &ProjectName) -> StreamName {
    reservation_stream("project-name", org_id, &name.key())
}

impl ProjectService {
    /// A service writing to `store`, accepting remote repositories only.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            repos: RepoPolicy::default(),
        }
    }

    /// The same service under another repository policy.
    pub fn with_repo_policy(mut self, repos: RepoPolicy) -> Self {
        self.repos = repos;
        self
    }

    /// The repositories it accepts (build drivers clone by the same policy).
    pub fn repo_policy(&self) -> RepoPolicy {
        self.repos
    }

    /// The project's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Project>(id)
    }

    /// Reserves a project name in the caller's organization; a holder that no longer uses it
    /// (never created, deleted, renamed) gives it up.
    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        name: &ProjectName,
    ) -> Result<StreamName, ProjectCommandError> {
        let key = name.key();
        claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, name),
            owner,
            ctx,
            |p: &Project| p.active().is_some_and(|p| p.name.key() == key),
            || {
                format!(
                    "a project named {:?} already exists in this organization",
                    name.as_str()
                )
            },
        )
        .await
    }

    /// Creates a project with a new id.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        input: ProjectInput,
    ) -> Result<Written<Project>, ProjectCommandError> {
        self.repos
            .check(&input.repo_url)
            .map_err(CommandError::Invalid)?;
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &input.name).await?;
        let command = ProjectCommand::Create {
            project_id: id,
            org_id: ctx.org_id,
            name: input.name,
            repo_url: input.repo_url,
            build_command: input.build_command,
            at: ctx.occurred_at,
        };
        let written =
            execute::<Project>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Replaces a project's fields; `if_match` is the revision the caller saw.
    ///
    /// Whether the name changes (and so needs a reservation) is decided on the state the
    /// update is then appended to: the append is pinned to that state's revision, and if the
    /// project moved meanwhile the whole decision is made again.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        input: ProjectInput,
    ) -> Result<Written<Project>, ProjectCommandError> {
        let stream = Self::stream(id);
        self.repos
            .check(&input.repo_url)
            .map_err(CommandError::Invalid)?;
        let mut fresh_only = false;
        for _ in 0..MAX_ATTEMPTS {
            let (current, revision, guessed) = if fresh_only {
                let (state, revision) = load::<Project>(self.store.as_ref(), &stream).await?;
                (state, revision, false)
            } else {
                load_guess::<Project>(self.store.as_ref(), &stream).await?
            };
            let current_key = match current.active() {
                Some(p) if p.org_id == ctx.org_id => p.name.key(),
                _ if guessed => {
                    fresh_only = true;
                    continue;
                }
                _ => return Err(CommandError::Rejected(ProjectError::NotFound)),
            };
            let renamed = input.name.key() != current_key;
            let new_reservation = if renamed {
                Some(self.reserve_name(ctx, id, &input.name).await?)
            } else {
                None
            };
            let command = ProjectCommand::Update {
                org_id: ctx.org_id,
                name: input.name.clone(),
                repo_url: input.repo_url.clone(),
                build_command: input.build_command.clone(),
                at: ctx.occurred_at,
            };
            // The caller's revision, or else the one `renamed` was decided on.
            let pin = if_match.or(revision);
            let written = execute::<Project>(self.store.as_ref(), &stream, ctx, pin, command).await;
            if if_match.is_none() && matches!(written, Err(CommandError::PreconditionFailed { .. }))
            {
                // The project moved after `renamed` was decided: decide again.
                settle_key_change(self.store.as_ref(), id, &written, new_reservation, |_| None)
                    .await;
                fresh_only = true;
                continue;
            }
            settle_key_change(self.store.as_ref(), id, &written, new_reservation, |w| {
                let (before, after) = (w.previous.active()?, w.state.active()?);
                (before.name.key() != after.name.key())
                    .then(|| name_reservation(ctx.org_id, &before.name))
            })
            .await;
            return written;
        }
        Err(CommandError::Contention {
            stream: stream.to_string(),
        })
    }

    /// Deletes a project; its name is free again.
    pub async fn delete(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
    ) -> Result<Written<Project>, ProjectCommandError> {
        let written = execute::<Project>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            ProjectCommand::Delete {
                org_id: ctx.org_id,
                at: ctx.occurred_at,
            },
        )
        .await?;
        if let Some(before) = written.previous.active() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::reserve;
    use atelier_store::memory::MemoryEventStore;

    fn input(name: &str) -> ProjectInput {
        ProjectInput {
            name: ProjectName::parse(name).unwrap(),
            repo_url: RepoUrl::parse("https://example.com/r.git").unwrap(),
            build_command: None,
        }
    }

    fn service() -> (ProjectService, CommandContext) {
        let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
        (
            ProjectService::new(store),
            CommandContext::new(Uuid::from_u128(1), "user-1"),
        )
    }

    fn input_with_repo(name: &str, repo: &str) -> ProjectInput {
        ProjectInput {
            repo_url: RepoUrl::parse(repo).unwrap(),
            ..input(name)
        }
    }

    #[tokio::test]
    async fn a_repository_on_the_servers_disk_is_refused_on_field_repo_unless_allowed() {
        let (s, ctx) = service();
        let err = s
            .create(&ctx, input_with_repo("A", "file:///etc"))
            .await
            .unwrap_err();
        match err {
            CommandError::Invalid(e) => assert_eq!(e.field, "repo"),
            other => panic!("{other:?}"),
        }
        // Nothing was reserved by the refused create.
        let a = s.create(&ctx, input("A")).await.unwrap();
        let id = a.state.active().unwrap().id;
        let err = s
            .update(&ctx, id, None, input_with_repo("A", "file:///etc"))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Invalid(_)), "{err:?}");
        let allowing = s.clone().with_repo_policy(RepoPolicy::ALLOW_LOCAL);
        allowing
            .update(
                &ctx,
                id,
                None,
                input_with_repo("A", "file:///srv/git/a.git"),
            )
            .await
            .unwrap();
        allowing
            .create(&ctx, input_with_repo("B", "file:///srv/git/b.git"))
            .await
            .unwrap();
    }

    #[test]
    fn a_stored_local_repository_is_refused_and_git_may_not_reach_one() {
        let strict = RepoPolicy::default();
        assert_eq!(
            strict.check_stored("file:///etc").unwrap_err().field,
            "repo"
        );
        assert!(strict.check_stored("ext::sh -c id").is_err());
        assert!(strict.check_stored("https://example.com/r.git").is_ok());
        assert!(
            RepoPolicy::ALLOW_LOCAL
                .check_stored("file:///srv/r")
                .is_ok()
        );
        assert!(
            RepoPolicy::ALLOW_LOCAL
                .check_stored("ext::sh -c id")
                .is_err()
        );
        assert!(!strict.git_protocols().contains("file"));
        for policy in [strict, RepoPolicy::ALLOW_LOCAL] {
            assert!(
                !policy
                    .git_protocols()
                    .split(':')
                    .any(|p| p == "ext" || p == "fd")
            );
        }
    }

    #[tokio::test]
    async fn a_name_is_unique_within_an_organization_whatever_its_case() {
        let (s, ctx) = service();
        s.create(&ctx, input("Demo")).await.unwrap();
        let err = s.create(&ctx, input("  demo ")).await.unwrap_err();
        assert!(matches!(err, CommandError::Conflict(_)), "{err:?}");
        let other = CommandContext::new(Uuid::from_u128(2), "user-2");
        s.create(&other, input("Demo")).await.unwrap();
    }

    #[tokio::test]
    async fn a_look_alike_of_a_name_is_the_name_already_taken() {
        let (s, ctx) = service();
        s.create(&ctx, input("AlphaProj")).await.unwrap();
        // Full-width letters; a Cyrillic capital A (U+0410).
        for look_alike in ["ＡｌｐｈａＰｒｏｊ", "\u{410}lphaProj", "ALPHAPR0J"] {
            let err = s.create(&ctx, input(look_alike)).await.unwrap_err();
            assert!(
                matches!(err, CommandError::Conflict(_)),
                "{look_alike:?}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_deleted_or_renamed_project_frees_its_name() {
        let (s, ctx) = service();
        let a = s.create(&ctx, input("A")).await.unwrap();
        let id = a.state.active().unwrap().id;
        s.update(&ctx, id, a.revision, input("B")).await.unwrap();
        s.create(&ctx, input("A")).await.unwrap();
        let err = s.create(&ctx, input("B")).await.unwrap_err();
        assert!(matches!(err, CommandError::Conflict(_)));
        s.delete(&ctx, id, None).await.unwrap();
        s.create(&ctx, input("B")).await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_if_match_is_a_failed_precondition_and_changes_nothing() {
        let (s, ctx) = service();
        let a = s.create(&ctx, input("A")).await.unwrap();
        let id = a.state.active().unwrap().id;
        s.update(&ctx, id, Some(0), input("B")).await.unwrap();
        let err = s.update(&ctx, id, Some(0), input("C")).await.unwrap_err();
        assert!(matches!(
            err,
            CommandError::PreconditionFailed {
                expected: 0,
                actual: Some(1)
            }
        ));
        // The failed rename released the name it had reserved.
        s.create(&ctx, input("C")).await.unwrap();
    }

    #[tokio::test]
    async fn a_reservation_left_by_a_crash_is_taken_over() {
        let (s, ctx) = service();
        // A create that reserved the name and died before writing the project.
        let ghost = Uuid::now_v7();
        let stream = name_reservation(ctx.org_id, &ProjectName::parse("Ghost").unwrap());
        reserve(s.store.as_ref(), &stream, ghost, &ctx, |_| async {
            Ok(false)
        })
        .await
        .unwrap();
        s.create(&ctx, input("ghost")).await.unwrap();
    }

    #[tokio::test]
    async fn every_event_carries_who_for_whom_and_why() {
        let (s, ctx) = service();
        let ctx = ctx.with_request_id("req-1").with_credential("session:s-1");
        let a = s.create(&ctx, input("A")).await.unwrap();
        let id = a.state.active().unwrap().id;
        let events = s
            .store
            .read_stream(
                &ProjectService::stream(id),
                atelier_store::ReadStream::forward(),
            )
            .await
            .unwrap();
        let m = &events[0].metadata;
        assert_eq!(m["org_id"], ctx.org_id.to_string());
        assert_eq!(m["actor"], "user-1");
        assert_eq!(m["request_id"], "req-1");
        assert_eq!(m["correlation_id"], ctx.correlation_id.to_string());
        assert!(m.get("causation_id").is_some());
        assert_eq!(m["credential"], "session:s-1");
        // Projects' events are at schema 2 (ProjectUpdated carries what changed).
        assert_eq!(m["schema"], 2);
    }
}

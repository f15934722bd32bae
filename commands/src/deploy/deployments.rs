//! Deployment commands: create, act (stop, start, cancel, redeploy, rollback, variables,
//! delete) for people, and the runner's reports of what its driver did.
//!
//! Names are unique within an organization while a deployment is not deleted. Secret values go
//! to the [`Vault`] before the event that names them, and are discarded again when the
//! command is refused.

use std::sync::Arc;

use atelier_domain::deploy::deployment::{
    Action, Deployment, DeploymentCommand, DeploymentData, DeploymentError, DeploymentStatus,
};
use atelier_domain::deploy::spec::{DeploymentName, EnvInput, EnvVar, ParsedSpec};
use atelier_domain::deploy::target::Target;
use atelier_domain::value::invalid;
use atelier_store::{EventStore, StoreError, StreamName};
use uuid::Uuid;

use super::vault::Vault;
use crate::handler::{CommandContext, CommandError, Written, execute, load, stream_of};
use crate::reservation::{claim, release_quietly, reservation_stream, settle_key_change};

/// A deployment command's error.
pub type DeploymentCommandError = CommandError<DeploymentError>;

fn name_reservation(org_id: Uuid, name: &DeploymentName) -> StreamName {
    reservation_stream("deployment-name", org_id, &name.key())
}

fn store_error(e: sqlx::Error) -> DeploymentCommandError {
    CommandError::Store(StoreError::backend(e))
}

/// New variables: values given now (secrets among them go to the vault), and the names of
/// secrets to keep as they are (their value is not sent again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChange {
    /// Variables with their values.
    pub set: Vec<EnvInput>,
    /// Secret variables kept with their current value.
    pub keep: Vec<String>,
}

/// Creates deployments and records their life.
#[derive(Clone)]
pub struct DeploymentService {
    store: Arc<dyn EventStore>,
    vault: Vault,
}

impl DeploymentService {
    /// A service writing to `store`, secrets to `vault`.
    pub fn new(store: Arc<dyn EventStore>, vault: Vault) -> Self {
        Self { store, vault }
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// A deployment's stream.
    pub fn stream(id: Uuid) -> StreamName {
        stream_of::<Deployment>(id)
    }

    /// A deployment as the log has it, with its revision.
    pub async fn load(
        &self,
        id: Uuid,
    ) -> Result<(Deployment, Option<u64>), DeploymentCommandError> {
        load::<Deployment>(self.store.as_ref(), &Self::stream(id)).await
    }

    async fn reserve_name(
        &self,
        ctx: &CommandContext,
        owner: Uuid,
        name: &DeploymentName,
    ) -> Result<StreamName, DeploymentCommandError> {
        let key = name.key();
        claim(
            self.store.as_ref(),
            name_reservation(ctx.org_id, name),
            owner,
            ctx,
            |d: &Deployment| {
                d.data().is_some_and(|d| {
                    d.status != DeploymentStatus::Deleted && d.spec().name.key() == key
                })
            },
            || {
                format!(
                    "a deployment named {:?} already exists in this organization",
                    name.as_str()
                )
            },
        )
        .await
    }

    /// Refuses a target that is not live in the caller's organization (field `target_id`).
    async fn check_target(
        &self,
        ctx: &CommandContext,
        target_id: Option<Uuid>,
    ) -> Result<(), DeploymentCommandError> {
        let Some(id) = target_id else { return Ok(()) };
        let (target, _) = load::<Target>(self.store.as_ref(), &stream_of::<Target>(id))
            .await
            .map_err(|e| match e {
                CommandError::Store(e) => CommandError::Store(e),
                _ => CommandError::Invalid(invalid("target_id", "no such target")),
            })?;
        match target.visible_to(ctx.org_id) {
            Some(_) => Ok(()),
            None => Err(CommandError::Invalid(invalid(
                "target_id",
                "no such target in this organization",
            ))),
        }
    }

    /// Writes the secret values among `inputs` to the vault: the variables as events hold them.
    async fn seal(
        &self,
        ctx: &CommandContext,
        deployment_id: Uuid,
        inputs: Vec<EnvInput>,
        sealed: &mut Vec<Uuid>,
    ) -> Result<Vec<EnvVar>, DeploymentCommandError> {
        let mut env = Vec::with_capacity(inputs.len());
        for input in inputs {
            if input.secret {
                let id = self
                    .vault
                    .put(ctx.org_id, deployment_id, &input.name, &input.value)
                    .await
                    .map_err(store_error)?;
                sealed.push(id);
                env.push(EnvVar {
                    name: input.name,
                    value: None,
                    secret_ref: Some(id),
                });
            } else {
                env.push(EnvVar {
                    name: input.name,
                    value: Some(input.value),
                    secret_ref: None,
                });
            }
        }
        Ok(env)
    }

    /// Discards what was sealed for a command that was refused.
    async fn unseal_on_error<T>(
        &self,
        outcome: &Result<T, DeploymentCommandError>,
        sealed: &[Uuid],
    ) {
        if outcome.is_err()
            && let Err(e) = self.vault.discard(sealed).await
        {
            tracing::warn!(error = %e, "could not discard the secrets of a refused command");
        }
    }

    /// Creates a pending deployment with a new id.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        spec: ParsedSpec,
        env: Vec<EnvInput>,
    ) -> Result<Written<Deployment>, DeploymentCommandError> {
        self.check_target(ctx, spec.target_id).await?;
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &spec.name).await?;
        let mut sealed = Vec::new();
        let written = match self.seal(ctx, id, env, &mut sealed).await {
            Ok(env) => {
                let command = DeploymentCommand::Create {
                    deployment_id: id,
                    org_id: ctx.org_id,
                    spec: spec.with_env(env),
                    by: ctx.actor.clone(),
                    at: ctx.occurred_at,
                };
                execute::<Deployment>(self.store.as_ref(), &Self::stream(id), ctx, None, command)
                    .await
            }
            Err(e) => Err(e),
        };
        self.unseal_on_error(&written, &sealed).await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Creates a deployment of a stack version (its spec from
    /// `DeploymentSpec::for_stack`): no repository, no variables to seal.
    pub async fn create_for_stack(
        &self,
        ctx: &CommandContext,
        spec: atelier_domain::deploy::spec::DeploymentSpec,
    ) -> Result<Written<Deployment>, DeploymentCommandError> {
        self.check_target(ctx, spec.target_id).await?;
        let id = Uuid::now_v7();
        let reservation = self.reserve_name(ctx, id, &spec.name).await?;
        let command = DeploymentCommand::Create {
            deployment_id: id,
            org_id: ctx.org_id,
            spec,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        let written =
            execute::<Deployment>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await;
        settle_key_change(self.store.as_ref(), id, &written, Some(reservation), |_| {
            None
        })
        .await;
        written
    }

    /// Someone acts on a deployment; `if_match` is the revision they saw.
    pub async fn act(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        action: Action,
    ) -> Result<Written<Deployment>, DeploymentCommandError> {
        let deleting = action == Action::Delete;
        let command = DeploymentCommand::Act {
            org_id: ctx.org_id,
            action,
            by: ctx.actor.clone(),
            at: ctx.occurred_at,
        };
        let written = execute::<Deployment>(
            self.store.as_ref(),
            &Self::stream(id),
            ctx,
            if_match,
            command,
        )
        .await?;
        if deleting
            && let Some(before) = written.previous.data()
            && before.status != DeploymentStatus::Deleted
        {
            release_quietly(
                self.store.as_ref(),
                &name_reservation(ctx.org_id, &before.spec().name),
                id,
            )
            .await;
        }
        Ok(written)
    }

    /// Replaces a deployment's variables (a new version; a running app is redeployed).
    pub async fn set_env(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        if_match: Option<u64>,
        change: EnvChange,
    ) -> Result<Written<Deployment>, DeploymentCommandError> {
        let (current, _) = self.load(id).await?;
        let current = current
            .visible_to(ctx.org_id)
            .ok_or(CommandError::Rejected(DeploymentError::NotFound))?;
        let mut kept = Vec::new();
        for name in &change.keep {
            match current
                .spec()
                .env
                .iter()
                .find(|v| &v.name == name && v.is_secret())
            {
                Some(v) => kept.push(v.clone()),
                None => {
                    return Err(CommandError::Invalid(invalid(
                        "env",
                        format!("{name} has no secret value to keep: give its value"),
                    )));
                }
            }
        }
        let mut sealed = Vec::new();
        let written = match self.seal(ctx, id, change.set, &mut sealed).await {
            Ok(mut env) => {
                env.extend(kept);
                env.sort_by(|a, b| a.name.cmp(&b.name));
                self.act(ctx, id, if_match, Action::SetEnv { env }).await
            }
            Err(e) => Err(e),
        };
        self.unseal_on_error(&written, &sealed).await;
        written
    }

    /// A runner records what its driver did (claim, provisioned, running, failed, destroyed).
    pub async fn record(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        command: DeploymentCommand,
    ) -> Result<Written<Deployment>, DeploymentCommandError> {
        execute::<Deployment>(self.store.as_ref(), &Self::stream(id), ctx, None, command).await
    }

    /// The variables of the version a deployment runs, secrets resolved from the vault.
    pub async fn resolved_env(
        &self,
        d: &DeploymentData,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let env = &d.spec().env;
        let refs: Vec<Uuid> = env.iter().filter_map(|v| v.secret_ref).collect();
        let values = if refs.is_empty() {
            Default::default()
        } else {
            self.vault.values(d.id, &refs).await?
        };
        Ok(env
            .iter()
            .filter_map(|v| match (&v.value, v.secret_ref) {
                (Some(value), _) => Some((v.name.clone(), value.clone())),
                (None, Some(r)) => values.get(&r).map(|value| (v.name.clone(), value.clone())),
                (None, None) => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_domain::deploy::spec::SpecInput;
    use atelier_store::memory::MemoryEventStore;
    use atelier_store::testing::TestDatabase;

    fn spec(name: &str) -> ParsedSpec {
        SpecInput {
            name: Some(name),
            deployment_type: Some("vm"),
            framework: Some("static"),
            github_url: Some("https://github.com/acme/site"),
            cores: Some(2),
            memory: Some(2048),
            disk: Some(20),
            target_id: None,
        }
        .parse()
        .unwrap()
    }

    async fn service() -> (DeploymentService, CommandContext, TestDatabase) {
        let db = TestDatabase::create().await.unwrap();
        let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
        let vault = Vault::new(db.pool(2).await.unwrap());
        (
            DeploymentService::new(store, vault),
            CommandContext::new(Uuid::from_u128(1), "user-1"),
            db,
        )
    }

    fn secret(name: &str, value: &str) -> EnvInput {
        EnvInput {
            name: name.into(),
            value: value.into(),
            secret: true,
        }
    }

    #[tokio::test]
    async fn a_secret_value_is_in_the_vault_and_only_its_reference_in_the_event() {
        let (s, ctx, _db) = service().await;
        let w = s
            .create(&ctx, spec("app-1"), vec![secret("TOKEN", "hunter2")])
            .await
            .unwrap();
        let d = w.state.data().unwrap();
        let var = &d.spec().env[0];
        assert_eq!(var.value, None);
        assert!(var.secret_ref.is_some());
        assert!(!serde_json::to_string(d.spec()).unwrap().contains("hunter2"));
        assert_eq!(
            s.resolved_env(d).await.unwrap(),
            [("TOKEN".to_owned(), "hunter2".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_name_is_unique_in_the_organization_until_its_deployment_is_deleted() {
        let (s, ctx, _db) = service().await;
        let first = s.create(&ctx, spec("App-1"), vec![]).await.unwrap();
        let taken = s.create(&ctx, spec("app-1"), vec![]).await;
        assert!(matches!(taken, Err(CommandError::Conflict(m)) if m.contains("app-1")));
        let other = CommandContext::new(Uuid::from_u128(2), "user-2");
        s.create(&other, spec("app-1"), vec![]).await.unwrap();
        let id = first.state.data().unwrap().id;
        s.act(&ctx, id, None, Action::Delete).await.unwrap();
        s.create(&ctx, spec("app-1"), vec![]).await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_target_is_refused_on_its_field() {
        let (s, ctx, _db) = service().await;
        let mut parsed = spec("app-1");
        parsed.target_id = Some(Uuid::now_v7());
        let e = s.create(&ctx, parsed, vec![]).await.unwrap_err();
        assert!(matches!(e, CommandError::Invalid(v) if v.field == "target_id"));
    }

    #[tokio::test]
    async fn a_secret_kept_by_name_keeps_its_reference_and_an_unknown_one_is_refused() {
        let (s, ctx, _db) = service().await;
        let w = s
            .create(&ctx, spec("app-1"), vec![secret("TOKEN", "hunter2")])
            .await
            .unwrap();
        let d = w.state.data().unwrap().clone();
        let before = d.spec().env[0].secret_ref;
        let change = EnvChange {
            set: vec![EnvInput {
                name: "MODE".into(),
                value: "prod".into(),
                secret: false,
            }],
            keep: vec!["TOKEN".into()],
        };
        let w = s.set_env(&ctx, d.id, None, change).await.unwrap();
        let after = w.state.data().unwrap();
        assert_eq!(after.version, 2);
        assert_eq!(after.spec().env.len(), 2);
        assert_eq!(
            after
                .spec()
                .env
                .iter()
                .find(|v| v.name == "TOKEN")
                .unwrap()
                .secret_ref,
            before
        );
        let refused = s
            .set_env(
                &ctx,
                d.id,
                None,
                EnvChange {
                    set: vec![],
                    keep: vec!["NOPE".into()],
                },
            )
            .await;
        assert!(matches!(refused, Err(CommandError::Invalid(v)) if v.message.contains("NOPE")));
    }
}

//! Provisioner drivers: how a deployment's infrastructure is created and its app run. The
//! deploy runner ([`super::runner`]) calls them; they never append events themselves.
//!
//! `simulated` behaves as the PaaS seed: an address of a configured pool, a VM id from 100,
//! staged durations and a configurable failure rate, and no network traffic at all. `process`
//! ([`super::process_driver`]) really runs the app on this machine.

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::deploy::deployment::FailureReason;
use atelier_domain::deploy::spec::DeploymentSpec;
use rand::RngExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::output::{LogHandle, LogStream};

/// What a driver rolls out.
#[derive(Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The deployment.
    pub deployment_id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// The version rolled out.
    pub version: u32,
    /// Its spec.
    pub spec: DeploymentSpec,
    /// Its variables, secrets resolved (never log these).
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("deployment_id", &self.deployment_id)
            .field("version", &self.version)
            .field("variables", &self.env.len())
            .finish_non_exhaustive()
    }
}

/// What provisioning gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The address.
    pub ip_address: String,
    /// The VM id.
    pub vm_id: u32,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It failed (what it had created is destroyed already).
    Failed {
        /// Why.
        reason: FailureReason,
        /// For people.
        message: String,
    },
    /// It was cancelled.
    Cancelled,
}

impl Failure {
    /// A failure for this reason.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Failed {
            reason: FailureReason::Error,
            message: message.into(),
        }
    }
}

/// Creates, runs, stops and destroys deployments.
#[async_trait]
pub trait Provisioner: Send + Sync + 'static {
    /// Its name, as `ATELIER_DEPLOY_DRIVER` spells it.
    fn name(&self) -> &'static str;

    /// Creates the deployment's infrastructure, replacing whatever it had (a redeploy). On a
    /// failure or a cancel, what it created is gone.
    async fn provision(
        &self,
        job: &Rollout,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<Provisioned, Failure>;

    /// Starts the app on what was provisioned and waits until it answers: its access URL. On a
    /// failure the app is stopped (the infrastructure stays until [`Provisioner::destroy`]).
    async fn start(
        &self,
        job: &Rollout,
        at: &Provisioned,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<String, Failure>;

    /// Stops the app, keeping the infrastructure. Stopping a stopped app does nothing.
    async fn stop(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String>;

    /// Destroys everything the deployment has. Destroying nothing does nothing.
    async fn destroy(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String>;

    /// Whether the deployment's app runs (a runner asks after a restart).
    async fn alive(&self, deployment_id: Uuid) -> bool;

    /// Resolves when the app stops by itself, with what happened; never, for apps that cannot.
    async fn exited(&self, deployment_id: Uuid) -> String;

    /// Every deployment it holds something for (a runner cleans up after a restart).
    async fn inventory(&self) -> Result<Vec<Uuid>, String>;
}

/// An IPv4 pool, as `192.168.100.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    network: u32,
    prefix: u8,
}

impl AddressPool {
    /// The default pool.
    pub const DEFAULT: &'static str = "192.168.100.0/24";

    /// Parses `a.b.c.d/n` (n from 8 to 30).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (addr, prefix) = raw
            .split_once('/')
            .ok_or_else(|| format!("{raw:?} is not a CIDR block like {}", Self::DEFAULT))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("the prefix of {raw:?} must be from 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: u32::from(addr) & mask,
            prefix,
        })
    }

    /// The addresses it hands out, in order: from `.10` of the block (the first ten are left
    /// to gateways and the like) in blocks of at least 64, else from the first host; never
    /// the broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = 1u32 << (32 - self.prefix);
        let first = if size >= 64 { 10 } else { 1 };
        (first..size - 1).map(move |h| Ipv4Addr::from(self.network + h))
    }
}

impl Default for AddressPool {
    fn default() -> Self {
        Self::parse(Self::DEFAULT).expect("the default pool parses")
    }
}

/// The first VM id.
pub const FIRST_VM_ID: i32 = 100;

/// What runners hold: VM ids and pool addresses, in `deploy_allocations`. Every server on the
/// database agrees (an allocation takes a lock), and an allocation survives a restart: a
/// deployment provisioned again keeps its address and VM id.
#[derive(Clone)]
pub struct Allocations {
    pool: PgPool,
}

impl Allocations {
    /// Allocations in this database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The deployment's VM id and (with `addresses`) an address of the pool unique in its
    /// organization; the ones it has if it has some. `None` when the pool is exhausted.
    pub async fn allocate(
        &self,
        org_id: Uuid,
        deployment_id: Uuid,
        runner: &str,
        addresses: Option<&AddressPool>,
    ) -> Result<Option<(Option<String>, u32)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('deploy_allocations', 0))")
            .execute(&mut *tx)
            .await?;
        let held: Option<(Option<String>, i32)> =
            sqlx::query_as("SELECT ip, vm_id FROM deploy_allocations WHERE deployment_id = $1")
                .bind(deployment_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((ip, vm_id)) = held {
            tx.commit().await?;
            return Ok(Some((ip, vm_id as u32)));
        }
        let ip = match addresses {
            None => None,
            Some(pool) => {
                let used: std::collections::HashSet<Ipv4Addr> = sqlx::query_scalar::<_, String>(
                    "SELECT ip FROM deploy_allocations WHERE org_id = $1 AND ip IS NOT NULL",
                )
                .bind(org_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
                match pool.hosts().find(|h| !used.contains(h)) {
                    Some(ip) => Some(ip.to_string()),
                    None => return Ok(None),
                }
            }
        };
        let vm_id: i32 = sqlx::query_scalar(
            "SELECT min(c.v) FROM (SELECT $1::int AS v UNION ALL \
             SELECT vm_id + 1 FROM deploy_allocations) c \
             WHERE c.v >= $1 AND NOT EXISTS (SELECT 1 FROM deploy_allocations a WHERE a.vm_id = c.v)",
        )
        .bind(FIRST_VM_ID)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deploy_allocations (deployment_id, org_id, runner, ip, vm_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(deployment_id)
        .bind(org_id)
        .bind(runner)
        .bind(&ip)
        .bind(vm_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((ip, vm_id as u32)))
    }

    /// Whether the deployment holds an allocation.
    pub async fn holds(&self, deployment_id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deploy_allocations WHERE deployment_id = $1)",
        )
        .bind(deployment_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Gives the deployment's allocation back.
    pub async fn release(&self, deployment_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM deploy_allocations WHERE deployment_id = $1")
            .bind(deployment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The deployments this runner holds allocations for.
    pub async fn held_by(&self, runner: &str) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar("SELECT deployment_id FROM deploy_allocations WHERE runner = $1")
            .bind(runner)
            .fetch_all(&self.pool)
            .await
    }
}

/// The seed's simulated provisioner: an address of the pool and a VM id, a provisioning stage
/// (3 to 8 s) and a deployment stage (2 to 6 s), times `time_scale`, and a failure with odds
/// `failure_rate` in one of them. It sends nothing over any network: the address is a name.
#[derive(Clone)]
pub struct SimulatedProvisioner {
    /// Multiplies every duration (tests and benchmarks use small values).
    pub time_scale: f64,
    /// The odds of a failure, from 0 to 1.
    pub failure_rate: f64,
    /// Where addresses come from.
    pub addresses: AddressPool,
    /// The allocations.
    pub allocations: Allocations,
    /// The runner's id (allocations are recorded under it).
    pub runner: String,
}

impl SimulatedProvisioner {
    async fn stage(
        &self,
        log: &LogHandle,
        steps: &[String],
        seconds: (f64, f64),
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let total = {
            let mut rng = rand::rng();
            rng.random_range(seconds.0..=seconds.1) * self.time_scale.max(0.0)
        };
        for step in steps {
            log.line(LogStream::Stdout, step.clone());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(total / steps.len() as f64)) => {}
                _ = cancel.cancelled() => return Err(Failure::Cancelled),
            }
        }
        Ok(())
    }

    fn fails(&self) -> bool {
        rand::rng().random_bool(self.failure_rate.clamp(0.0, 1.0) / 2.0)
    }
}

#[async_trait]
impl Provisioner for SimulatedProvisioner {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn provision(
        &self,
        job: &Rollout,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<Provisioned, Failure> {
        let (ip, vm_id) = match self
            .allocations
            .allocate(
                job.org_id,
                job.deployment_id,
                &self.runner,
                Some(&self.addresses),
            )
            .await
        {
            Ok(Some((Some(ip), vm_id))) => (ip, vm_id),
            Ok(_) => return Err(Failure::error("the address pool is exhausted")),
            Err(e) => return Err(Failure::error(format!("cannot allocate an address: {e}"))),
        };
        let kind = job.spec.deployment_type.as_str();
        let r = &job.spec.resources;
        let steps = [
            format!("terraform: creating {kind} {vm_id}"),
            format!(
                "terraform: {} cores, {} MB memory, {} GB disk",
                r.cores, r.memory, r.disk
            ),
            format!("terraform: network {ip} attached"),
            "terraform: apply complete".to_owned(),
        ];
        let staged = self.stage(log, &steps, (3.0, 8.0), cancel).await;
        let failed = staged.is_ok() && self.fails();
        if staged.is_err() || failed {
            let _ = self.destroy(job.deployment_id, log).await;
        }
        staged?;
        if failed {
            log.line(
                LogStream::Stderr,
                "terraform: error creating the VM (simulated)",
            );
            return Err(Failure::error("the simulated provisioning failed"));
        }
        Ok(Provisioned {
            ip_address: ip,
            vm_id,
        })
    }

    async fn start(
        &self,
        job: &Rollout,
        at: &Provisioned,
        log: &LogHandle,
        cancel: &CancellationToken,
    ) -> Result<String, Failure> {
        let framework = job.spec.framework();
        let port = framework.map_or(80, |f| f.port);
        let name = framework.map_or(job.spec.framework.as_str(), |f| f.name);
        let steps = [
            match (&job.spec.stack, &job.spec.github_url) {
                (Some(stack), _) => format!(
                    "compose: pulling the images of stack {} version {} ({})",
                    stack.stack_id,
                    stack.version,
                    stack.services.join(", ")
                ),
                (None, Some(repo)) => format!("ansible: cloning {}", repo.as_str()),
                (None, None) => "ansible: no repository to clone".to_owned(),
            },
            format!("ansible: installing {name}"),
            format!("ansible: starting the app on port {port}"),
        ];
        self.stage(log, &steps, (2.0, 6.0), cancel).await?;
        if self.fails() {
            log.line(
                LogStream::Stderr,
                "ansible: the app did not start (simulated)",
            );
            return Err(Failure::error("the simulated deployment failed"));
        }
        Ok(format!("http://{}:{port}", at.ip_address))
    }

    async fn stop(&self, _deployment_id: Uuid, log: &LogHandle) -> Result<(), String> {
        log.line(LogStream::Stdout, "ansible: app stopped");
        Ok(())
    }

    async fn destroy(&self, deployment_id: Uuid, log: &LogHandle) -> Result<(), String> {
        let held = self
            .allocations
            .holds(deployment_id)
            .await
            .map_err(|e| e.to_string())?;
        if held {
            log.line(LogStream::Stdout, "terraform: destroy complete");
        }
        self.allocations
            .release(deployment_id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn alive(&self, deployment_id: Uuid) -> bool {
        self.allocations.holds(deployment_id).await.unwrap_or(false)
    }

    async fn exited(&self, _deployment_id: Uuid) -> String {
        std::future::pending().await
    }

    async fn inventory(&self) -> Result<Vec<Uuid>, String> {
        self.allocations
            .held_by(&self.runner)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_hands_out_from_the_tenth_address_and_never_the_broadcast() {
        let pool = AddressPool::default();
        let hosts: Vec<_> = pool.hosts().collect();
        assert_eq!(hosts[0].to_string(), "192.168.100.10");
        assert_eq!(hosts.last().unwrap().to_string(), "192.168.100.254");
        let small = AddressPool::parse("10.0.0.8/30").unwrap();
        let hosts: Vec<_> = small.hosts().map(|h| h.to_string()).collect();
        assert_eq!(hosts, ["10.0.0.9", "10.0.0.10"]);
    }

    #[test]
    fn a_pool_that_is_not_a_cidr_block_is_refused_with_the_reason() {
        assert!(
            AddressPool::parse("192.168.100.0")
                .unwrap_err()
                .contains("CIDR")
        );
        assert!(
            AddressPool::parse("300.1.1.1/24")
                .unwrap_err()
                .contains("IPv4")
        );
        assert!(
            AddressPool::parse("10.0.0.0/31")
                .unwrap_err()
                .contains("8 to 30")
        );
    }
}

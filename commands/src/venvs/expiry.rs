//! The expiry of ephemeral environments: a worker that knows when each live ephemeral
//! environment expires (from the read model after a start, then from the log) and records
//! `EnvironmentExpired` when its time comes; the operation runner then cancels its operations
//! and removes its directory. An environment due while no server ran is expired at the start.
//! Several servers may run one: the second expiry of an environment records nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atelier_domain::venvs::environment::{Environment, EnvironmentError, EnvironmentEvent};
use atelier_domain::{Aggregate, DomainEvent};
use atelier_store::{EventStore, Filter, Position, SubscribeFrom, SubscriptionMessage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::environments::EnvironmentService;
use crate::handler::{CommandContext, CommandError};

/// Where the worker finds the live ephemeral environments after a start: the read model, once
/// it has passed `position` (the wiring provides it).
#[async_trait]
pub trait Ephemerals: Send + Sync + 'static {
    /// Every live ephemeral environment and when it expires, as of at least `position`.
    async fn live(&self, position: Position) -> Result<Vec<(Uuid, DateTime<Utc>)>, String>;
}

/// A running expiry worker; [`ExpiryWorker::stop`] stops it.
pub struct ExpiryWorker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ExpiryWorker {
    /// Starts the worker on the current tokio runtime; `actor` names it in the events it
    /// records (`runner:<id>`).
    pub fn start(
        store: Arc<dyn EventStore>,
        ephemerals: Arc<dyn Ephemerals>,
        actor: String,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, ephemerals, actor, stop.clone()));
        Self { stop, task }
    }

    /// Stops it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[async_trait]
impl crate::worker::Worker for ExpiryWorker {
    fn name(&self) -> &'static str {
        "venvs.expiry"
    }

    async fn stop(self: Box<Self>) {
        ExpiryWorker::stop(*self).await;
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    ephemerals: Arc<dyn Ephemerals>,
    actor: String,
    stop: CancellationToken,
) {
    let environments = EnvironmentService::new(store.clone());
    let mut delay = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            r = follow(store.as_ref(), ephemerals.as_ref(), &environments, &actor) => r,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = outcome {
            warn!(error = %e, "expiry worker interrupted; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How long until `at` (nothing when it is past).
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

async fn follow(
    store: &dyn EventStore,
    ephemerals: &dyn Ephemerals,
    environments: &EnvironmentService,
    actor: &str,
) -> Result<(), String> {
    let head = store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(Position::START);
    let mut due: BTreeSet<(DateTime<Utc>, Uuid)> = ephemerals
        .live(head)
        .await?
        .into_iter()
        .map(|(id, at)| (at, id))
        .collect();
    info!(ephemeral = due.len(), "expiry worker following the log");
    let mut sub = store.subscribe_all(
        SubscribeFrom::After(head),
        Filter::Category(vec![Environment::CATEGORY.to_owned()]),
    );
    loop {
        let next = due.first().copied();
        let wait = async {
            match next {
                Some((at, _)) => tokio::time::sleep(until(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {
                let Some((at, id)) = next else { continue };
                due.remove(&(at, id));
                if !expire(environments, actor, id, at).await {
                    // Tried again shortly: a store that failed once may answer now.
                    due.insert((Utc::now() + chrono::Duration::seconds(5), id));
                }
            }
            message = sub.next() => {
                let Some(message) = message else {
                    return Err("the subscription ended".to_owned());
                };
                let SubscriptionMessage::Event(event) = message else { continue };
                match EnvironmentEvent::decode_stored(&event.event_type, &event.metadata, &event.data) {
                    Ok(EnvironmentEvent::EnvironmentCreated { environment_id, ephemeral: Some(e), .. }) => {
                        due.insert((e.expires_at, environment_id));
                    }
                    Ok(
                        EnvironmentEvent::EnvironmentDeleted { environment_id, .. }
                        | EnvironmentEvent::EnvironmentExpired { environment_id, .. },
                    ) => due.retain(|(_, id)| *id != environment_id),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "expiry worker: unreadable event skipped"),
                }
            }
        }
    }
}

/// Expires an environment; false when it should be tried again (the store failed).
async fn expire(
    environments: &EnvironmentService,
    actor: &str,
    id: Uuid,
    due: DateTime<Utc>,
) -> bool {
    let org_id = match environments.load(id).await {
        Ok((Environment::Present(e), _)) => e.org_id,
        Ok(_) => return true,
        Err(e) => {
            warn!(environment_id = %id, error = %e, "cannot load an environment to expire");
            return false;
        }
    };
    let ctx = CommandContext::new(org_id, actor);
    // The clock may be a hair behind the due time the sleep aimed at.
    let at = Utc::now().max(due);
    match environments.expire(&ctx, id, at).await {
        Ok(w) => {
            if w.position.is_some() {
                info!(environment_id = %id, "ephemeral environment expired");
                metrics::counter!("atelier_venv_environments_expired_total").increment(1);
            }
            true
        }
        Err(CommandError::Rejected(
            EnvironmentError::NotDue(_) | EnvironmentError::NotEphemeral,
        )) => true,
        Err(e) => {
            warn!(environment_id = %id, error = %e, "cannot expire an environment");
            false
        }
    }
}

//! `atelier projections rebuild`: rebuilds read models beside the old ones, in this process (no
//! server needed). A running server's runner is fenced by the swap and continues from the new
//! generation; its readers never see an empty or half-built read model.

use std::sync::Arc;

use anyhow::Context;
use atelier_projections::rebuild::{BuildProgress, rebuild_projection};
use atelier_projections::runtime::Projection;
use atelier_store::postgres::{PgEventStore, backlog};
use atelier_store::{EventStore, Position};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

/// The projections a command names: `name`, or every one with `all`.
pub fn select(name: Option<&str>, all: bool) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    let every = atelier_projections::all();
    if all {
        return Ok(every);
    }
    let name = name.context("name a projection, or pass --all")?;
    let known: Vec<_> = every.iter().map(|p| p.name()).collect();
    let found = every.iter().find(|p| p.name() == name).cloned();
    let found = found.with_context(|| {
        format!(
            "no projection is named {name:?} (known: {})",
            known.join(", ")
        )
    })?;
    Ok(vec![found])
}

/// A progress bar over the log's events, on stderr (hidden when stderr is not a terminal).
pub async fn progress_bar(pool: &PgPool, name: &str) -> anyhow::Result<ProgressBar> {
    let total = backlog(pool, Position::START, u64::MAX).await?.events;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:24} [{bar:40}] {pos}/{len} events {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    Ok(bar)
}

/// Moves `bar` with a build's progress.
pub fn follow(bar: &ProgressBar) -> impl Fn(BuildProgress) + Send + Sync + use<> {
    let bar = bar.clone();
    move |p: BuildProgress| {
        if p.events > bar.length().unwrap_or(0) {
            bar.set_length(p.events);
        }
        bar.set_position(p.events);
        bar.set_message(p.position.to_string());
    }
}

/// Rebuilds the named projection, or all of them, one after the other.
pub async fn run(
    pool: &PgPool,
    store: &PgEventStore,
    name: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    let store: &dyn EventStore = store;
    for projection in select(name, all)? {
        let name = projection.name();
        let bar = progress_bar(pool, name).await?;
        let swapped = rebuild_projection(pool, store, projection.as_ref(), &follow(&bar))
            .await
            .with_context(|| format!("rebuild of {name} failed; the old read model still serves"));
        bar.finish_and_clear();
        let swapped = swapped?;
        println!(
            "{name} rebuilt up to {} (generation {})",
            swapped.position, swapped.generation
        );
    }
    Ok(())
}

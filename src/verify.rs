//! `atelier verify`: rebuilds every read model into a scratch schema and compares it row by
//! row with the live one at the same position (the live checkpoint, held by its row lock while
//! comparing); changes nothing. Fails when any read model differs or any projection has failed.

use atelier_projections::rebuild::{Verification, verify};
use atelier_store::EventStore;
use atelier_store::postgres::PgEventStore;
use sqlx::PgPool;

use crate::rebuild::{follow, progress_bar};

/// Verifies every projection; prints each one's outcome; an error when any is not OK.
pub async fn run(pool: &PgPool, store: &PgEventStore) -> anyhow::Result<()> {
    let store: &dyn EventStore = store;
    let mut bad = Vec::new();
    for projection in atelier_projections::all() {
        let name = projection.name();
        let bar = progress_bar(pool, name).await?;
        let outcome = verify(pool, store, projection.as_ref(), &follow(&bar)).await;
        bar.finish_and_clear();
        match outcome {
            Ok(v) => {
                print!("{}", report(&v));
                if !v.is_ok() {
                    bad.push(name);
                }
            }
            Err(e) => {
                println!("{name}: ERROR {e}");
                bad.push(name);
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("verification failed for: {}", bad.join(", "))
    }
}

/// One projection's outcome, as printed.
fn report(v: &Verification) -> String {
    let mut out = String::new();
    if v.is_ok() {
        out.push_str(&format!("{}: OK at {}\n", v.projection, v.position));
        return out;
    }
    if v.status == "failed" {
        out.push_str(&format!(
            "{}: FAILED at {}: {}\n",
            v.projection,
            v.position,
            v.error.as_deref().unwrap_or("(no error recorded)")
        ));
    }
    if !v.differences.is_empty() {
        out.push_str(&format!("{}: MISMATCH at {}\n", v.projection, v.position));
    }
    for d in &v.differences {
        out.push_str(&format!(
            "  table {}: {} row(s) only live, {} row(s) only rebuilt\n",
            d.table, d.only_live_count, d.only_rebuilt_count
        ));
        for row in &d.only_live {
            out.push_str(&format!("    only live:    {row}\n"));
        }
        for row in &d.only_rebuilt {
            out.push_str(&format!("    only rebuilt: {row}\n"));
        }
    }
    out
}

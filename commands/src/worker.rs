//! Background workers: what a context runs beside the requests (the factory's build runner),
//! started by the server after the projections and stopped before it exits. A worker is
//! restart-safe by contract: what it leaves behind when stopped, even abruptly, is what a new
//! worker finds and settles when it starts.

use async_trait::async_trait;

/// A running background worker.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Its name, for logs (`factory.build-runner`).
    fn name(&self) -> &'static str;

    /// Stops it and waits until it has.
    async fn stop(self: Box<Self>);
}

/// Runs `follow` (a worker's loop over the log, which ends only on an error) again and again
/// until `stop` is cancelled: after an interruption (the database went away, a subscription
/// ended) it waits from 100 ms, doubling to 5 s, and starts over from its backlog.
pub async fn follow_until_stopped<F, Fut>(
    name: &str,
    stop: &tokio_util::sync::CancellationToken,
    mut follow: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            r = follow() => r,
            _ = stop.cancelled() => Ok(()),
        };
        if stop.is_cancelled() {
            break;
        }
        if let Err(e) = outcome {
            tracing::warn!(worker = name, error = %e, "worker interrupted; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

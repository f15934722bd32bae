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

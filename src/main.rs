//! The `atelier` binary: reads its configuration, wires the adapters, and runs a command.

mod cli;
mod events;
mod rebuild;
mod verify;

use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.log);
    cli.run().await
}

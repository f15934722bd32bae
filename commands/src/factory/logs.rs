//! Build logs: the builds' output in the `build_logs` table ([`crate::output`]).

use sqlx::PgPool;

pub use crate::output::{LogHandle, LogLine, LogSink, LogStream, OutputLog as BuildLogs};
use crate::output::{LogTable, OutputLog};

/// The builds' log table.
pub const BUILD_LOGS: LogTable = LogTable {
    table: "build_logs",
    owner: "build_id",
};

/// The build logs of this database.
pub fn build_logs(pool: PgPool) -> BuildLogs {
    OutputLog::new(pool, BUILD_LOGS)
}

//! What the benchmark binaries share: the figures they read from `/proc`, and how their tables
//! print numbers and verdicts.

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;

/// A latency histogram in µs: 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// (VmRSS, VmHWM) of a process, in kB.
pub fn memory(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("no {key} in {path}"))
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// 4000000 → "4,000,000".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table's verdict.
pub fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped_and_verdicts_named() {
        assert_eq!(group(4_000_000), "4,000,000");
        assert_eq!(group(999), "999");
        assert_eq!(pass(true), "PASS");
        assert!(memory(std::process::id()).unwrap().0 > 0);
    }
}

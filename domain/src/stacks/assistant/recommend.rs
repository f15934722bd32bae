//! Rightsizing for `/llm/optimize`: recommendations from a deployment's limits and its recent
//! figures (95th percentiles), with headroom: CPU to 1.5 × its p95, memory to 1.3 × (memory
//! is not compressible: a process over its limit is killed, one over its CPU is only slowed).

use serde::{Deserialize, Serialize};

use super::generate::{cpus_text, memory_text};
use crate::value::{InvalidValue, invalid};

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// What it is about: `cpu`, `memory`, `replicas`, `restarts`.
    pub resource: String,
    /// Its current value, if known (`0.5`, `512M`, `3`).
    pub current: Option<String>,
    /// What to set it to, or what to do.
    pub recommended: String,
    /// Why, with the figures.
    pub reason: String,
}

/// A deployment's resources and recent figures.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceFigures {
    /// Its CPU limit, in cores.
    pub cpu_limit: Option<f64>,
    /// Its memory limit, in MB.
    pub memory_limit_mb: Option<u64>,
    /// Its CPU usage's 95th percentile, in cores (per replica).
    pub cpu_usage_p95: Option<f64>,
    /// Its memory usage's 95th percentile, in MB (per replica).
    pub memory_usage_p95_mb: Option<u64>,
    /// How often it restarted over the period.
    pub restarts: Option<u32>,
    /// How many replicas run.
    pub replicas: Option<u32>,
}

impl ResourceFigures {
    /// Every invalid figure, named as the API names it (CPU figures finite and not negative,
    /// a limit above 0).
    pub fn check(&self) -> Vec<InvalidValue> {
        let mut errors = Vec::new();
        if self.cpu_limit.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            errors.push(invalid("cpu_limit", "must be a number of cores above 0"));
        }
        if self
            .cpu_usage_p95
            .is_some_and(|c| !(c.is_finite() && c >= 0.0))
        {
            errors.push(invalid(
                "cpu_usage_p95",
                "must be a number of cores, 0 or more",
            ));
        }
        if self.memory_limit_mb == Some(0) {
            errors.push(invalid("memory_limit_mb", "must be above 0"));
        }
        errors
    }
}

/// CPU under-provisioned from this use of the limit.
const CPU_HIGH: f64 = 0.8;
/// CPU over-provisioned below this use of the limit.
const CPU_LOW: f64 = 0.3;
/// Memory under-provisioned from this use of the limit.
const MEMORY_HIGH: f64 = 0.85;
/// Memory over-provisioned below this use of the limit.
const MEMORY_LOW: f64 = 0.4;
/// The use of each replica's CPU that scaling aims at.
const REPLICA_TARGET: f64 = 0.6;
/// Restarts over the period that call for attention.
const RESTARTS: u32 = 3;

/// The least whole number at or above `x`, blind to floating-point noise (`3.0000000000000004`
/// is 3).
fn ceil(x: f64) -> f64 {
    (x - 1e-9).ceil()
}

fn cpu_for(p95: f64) -> f64 {
    (ceil(p95 * 1.5 / 0.05) * 0.05).max(0.1)
}

fn memory_for(p95: u64) -> u64 {
    (p95 * 13 / 10).div_ceil(64).max(1) * 64
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Recommendations from the figures, in the order cpu, memory, restarts, replicas; none when
/// the figures say nothing is wrong (or say too little).
pub fn recommend(figures: &ResourceFigures) -> Vec<Recommendation> {
    let cpu_limit = figures.cpu_limit.filter(|c| c.is_finite() && *c > 0.0);
    let cpu_p95 = figures.cpu_usage_p95.filter(|c| c.is_finite() && *c >= 0.0);
    let memory_limit = figures.memory_limit_mb.filter(|m| *m > 0);
    let memory_p95 = figures.memory_usage_p95_mb;
    let restarts = figures.restarts.unwrap_or(0);
    let mut out = Vec::new();

    // CPU.
    let cpu_use = cpu_limit.zip(cpu_p95).map(|(limit, p95)| p95 / limit);
    match (cpu_limit, cpu_p95) {
        (Some(limit), Some(p95)) => {
            let share = p95 / limit;
            let wanted = cpu_for(p95);
            if share >= CPU_HIGH {
                out.push(Recommendation {
                    resource: "cpu".into(),
                    current: Some(cpus_text(limit)),
                    recommended: cpus_text(wanted.max(limit + 0.05)),
                    reason: format!(
                        "under-provisioned: its p95 ({}) is {} of the limit, so it is \
                         throttled at peaks; the recommendation leaves 50% headroom",
                        cpus_text(p95),
                        percent(share)
                    ),
                });
            } else if share <= CPU_LOW && wanted < limit {
                out.push(Recommendation {
                    resource: "cpu".into(),
                    current: Some(cpus_text(limit)),
                    recommended: cpus_text(wanted),
                    reason: format!(
                        "over-provisioned: its p95 ({}) is {} of the limit; the \
                         recommendation still leaves 50% headroom",
                        cpus_text(p95),
                        percent(share)
                    ),
                });
            }
        }
        (None, Some(p95)) => out.push(Recommendation {
            resource: "cpu".into(),
            current: None,
            recommended: cpus_text(cpu_for(p95)),
            reason: format!(
                "no limit: one busy service can starve the others; its p95 is {} cores, \
                 plus 50% headroom",
                cpus_text(p95)
            ),
        }),
        _ => {}
    }

    // Memory.
    let memory_use = memory_limit
        .zip(memory_p95)
        .map(|(limit, p95)| p95 as f64 / limit as f64);
    let mut memory_raised = false;
    match (memory_limit, memory_p95) {
        (Some(limit), Some(p95)) => {
            let share = p95 as f64 / limit as f64;
            let wanted = memory_for(p95);
            let restarting = restarts >= RESTARTS && share >= 0.7;
            if share >= MEMORY_HIGH || restarting {
                memory_raised = true;
                let wanted = wanted.max(limit * 3 / 2 / 64 * 64).max(limit + 64);
                let why = if restarting {
                    format!(
                        "{restarts} restarts with memory at {} of its limit: it is likely \
                         killed for memory",
                        percent(share)
                    )
                } else {
                    format!(
                        "under-provisioned: its p95 ({}) is {} of the limit, a peak away from \
                         being killed",
                        memory_text(p95),
                        percent(share)
                    )
                };
                out.push(Recommendation {
                    resource: "memory".into(),
                    current: Some(memory_text(limit)),
                    recommended: memory_text(wanted),
                    reason: why,
                });
            } else if share <= MEMORY_LOW && wanted < limit {
                out.push(Recommendation {
                    resource: "memory".into(),
                    current: Some(memory_text(limit)),
                    recommended: memory_text(wanted),
                    reason: format!(
                        "over-provisioned: its p95 ({}) is {} of the limit; the \
                         recommendation still leaves 30% headroom",
                        memory_text(p95),
                        percent(share)
                    ),
                });
            }
        }
        (None, Some(p95)) => out.push(Recommendation {
            resource: "memory".into(),
            current: None,
            recommended: memory_text(memory_for(p95)),
            reason: format!(
                "no limit: a leak takes the whole machine's memory; its p95 is {}, plus 30% \
                 headroom",
                memory_text(p95)
            ),
        }),
        _ => {}
    }

    // Restarts that memory does not explain.
    if restarts >= RESTARTS && !memory_raised {
        out.push(Recommendation {
            resource: "restarts".into(),
            current: Some(restarts.to_string()),
            recommended: "find the cause in its logs (troubleshoot), then give its health \
                          check more time (start_period, retries) if it kills slow starts"
                .into(),
            reason: match memory_use {
                Some(share) => format!(
                    "{restarts} restarts with memory at {} of its limit: not memory, so a \
                     crash or a failing health check",
                    percent(share)
                ),
                None => format!("{restarts} restarts over the period"),
            },
        });
    }

    // Replicas.
    if let Some(replicas) = figures.replicas.filter(|r| *r > 0) {
        match cpu_use {
            Some(share) if share >= CPU_HIGH => {
                let wanted = ceil(f64::from(replicas) * share / REPLICA_TARGET) as u32;
                if wanted > replicas {
                    out.push(Recommendation {
                        resource: "replicas".into(),
                        current: Some(replicas.to_string()),
                        recommended: wanted.to_string(),
                        reason: format!(
                            "each replica uses {} of its CPU: {wanted} bring it near {}",
                            percent(share),
                            percent(REPLICA_TARGET)
                        ),
                    });
                }
            }
            Some(share) if share < 0.2 && replicas > 2 => {
                let wanted = (ceil(f64::from(replicas) * share / REPLICA_TARGET) as u32).max(2);
                if wanted < replicas {
                    out.push(Recommendation {
                        resource: "replicas".into(),
                        current: Some(replicas.to_string()),
                        recommended: wanted.to_string(),
                        reason: format!(
                            "each replica uses {} of its CPU: {wanted} carry the load (two \
                             kept, so that one can restart without an outage)",
                            percent(share)
                        ),
                    });
                }
            }
            _ if replicas == 1 && restarts > 0 => out.push(Recommendation {
                resource: "replicas".into(),
                current: Some("1".into()),
                recommended: "2".into(),
                reason: format!(
                    "one replica and {restarts} restart(s): each one was an outage; a second \
                     replica serves meanwhile"
                ),
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> ResourceFigures {
        ResourceFigures::default()
    }

    #[test]
    fn a_cpu_at_its_limit_gets_more_and_an_idle_one_less() {
        let busy = recommend(&ResourceFigures {
            cpu_limit: Some(0.5),
            cpu_usage_p95: Some(0.48),
            ..figures()
        });
        assert_eq!(busy.len(), 1);
        assert_eq!(busy[0].resource, "cpu");
        assert_eq!(busy[0].current.as_deref(), Some("0.5"));
        assert_eq!(busy[0].recommended, "0.75");
        assert!(busy[0].reason.starts_with("under-provisioned"));
        let idle = recommend(&ResourceFigures {
            cpu_limit: Some(4.0),
            cpu_usage_p95: Some(0.2),
            ..figures()
        });
        assert_eq!(idle[0].recommended, "0.3");
        assert!(idle[0].reason.starts_with("over-provisioned"));
    }

    #[test]
    fn memory_is_sized_from_its_p95_with_headroom() {
        let tight = recommend(&ResourceFigures {
            memory_limit_mb: Some(512),
            memory_usage_p95_mb: Some(500),
            ..figures()
        });
        assert_eq!(tight[0].resource, "memory");
        assert_eq!(tight[0].recommended, "768M");
        let loose = recommend(&ResourceFigures {
            memory_limit_mb: Some(4096),
            memory_usage_p95_mb: Some(300),
            ..figures()
        });
        assert_eq!(loose[0].recommended, "448M");
        let none = recommend(&ResourceFigures {
            memory_usage_p95_mb: Some(100),
            ..figures()
        });
        assert_eq!(none[0].current, None);
        assert_eq!(none[0].recommended, "192M");
    }

    #[test]
    fn restarts_near_the_memory_limit_point_at_memory_and_others_at_the_logs() {
        let oom = recommend(&ResourceFigures {
            memory_limit_mb: Some(1024),
            memory_usage_p95_mb: Some(800),
            restarts: Some(5),
            ..figures()
        });
        assert_eq!(oom.len(), 1);
        assert_eq!(oom[0].resource, "memory");
        assert!(oom[0].reason.contains("5 restarts"), "{}", oom[0].reason);
        let crash = recommend(&ResourceFigures {
            memory_limit_mb: Some(1024),
            memory_usage_p95_mb: Some(600),
            restarts: Some(5),
            ..figures()
        });
        assert_eq!(crash[0].resource, "restarts");
        assert!(crash[0].recommended.contains("troubleshoot"));
    }

    #[test]
    fn replicas_follow_the_cpu_load() {
        let busy = recommend(&ResourceFigures {
            cpu_limit: Some(1.0),
            cpu_usage_p95: Some(0.9),
            replicas: Some(2),
            ..figures()
        });
        let replicas = busy.iter().find(|r| r.resource == "replicas").unwrap();
        assert_eq!(replicas.recommended, "3");
        let idle = recommend(&ResourceFigures {
            cpu_limit: Some(1.0),
            cpu_usage_p95: Some(0.05),
            replicas: Some(6),
            ..figures()
        });
        let replicas = idle.iter().find(|r| r.resource == "replicas").unwrap();
        assert_eq!(replicas.recommended, "2");
        let single = recommend(&ResourceFigures {
            replicas: Some(1),
            restarts: Some(1),
            ..figures()
        });
        assert_eq!(single[0].recommended, "2");
    }

    #[test]
    fn figures_that_say_nothing_is_wrong_give_no_recommendation() {
        assert!(recommend(&figures()).is_empty());
        assert!(
            recommend(&ResourceFigures {
                cpu_limit: Some(1.0),
                cpu_usage_p95: Some(0.5),
                memory_limit_mb: Some(512),
                memory_usage_p95_mb: Some(300),
                restarts: Some(0),
                replicas: Some(2),
            })
            .is_empty()
        );
    }

    #[test]
    fn invalid_figures_are_reported_and_ignored() {
        let bad = ResourceFigures {
            cpu_limit: Some(f64::NAN),
            cpu_usage_p95: Some(-1.0),
            memory_limit_mb: Some(0),
            ..figures()
        };
        let fields: Vec<&str> = bad.check().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["cpu_limit", "cpu_usage_p95", "memory_limit_mb"]);
        assert!(recommend(&bad).is_empty());
    }
}

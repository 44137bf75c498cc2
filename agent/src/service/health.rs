//! `Health`: is the agent serving, and what is it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tsuba_protocols::agent::{
    CheckRequest, CheckResponse, Health, PROTOCOL_VERSION, ServingStatus, VersionRequest,
    VersionResponse,
};
use ttrpc::asynchronous::TtrpcContext;

use crate::initdata::Gate;

/// The `Health` service.
#[derive(Debug, Clone)]
pub struct HealthService {
    started: Instant,
    tee: String,
    gate: Arc<Gate>,
}

impl HealthService {
    /// A health service for an agent that started at `started` in the TEE named `tee`, serving
    /// as `gate` says.
    pub fn new(started: Instant, tee: impl Into<String>, gate: Arc<Gate>) -> Self {
        HealthService {
            started,
            tee: tee.into(),
            gate,
        }
    }
}

#[async_trait]
impl Health for HealthService {
    async fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<CheckResponse> {
        let mut resp = CheckResponse::new();
        // SERVING only when the agent can do its job: it has its initdata (TEE guests) and a
        // broker it can use, if one is named; otherwise the reason says what is missing.
        match self.gate.not_serving() {
            None => resp.status = ServingStatus::SERVING.into(),
            Some(reason) => {
                resp.status = ServingStatus::NOT_SERVING.into();
                resp.reason = reason;
            }
        }
        resp.uptime_ms = tsuba_protocols::agent::millis(self.started.elapsed());
        resp.agent_rss_kib = resident_kib().unwrap_or(0);
        Ok(resp)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        let mut resp = VersionResponse::new();
        resp.agent_version = env!("CARGO_PKG_VERSION").to_owned();
        resp.protocol_version = PROTOCOL_VERSION;
        resp.kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        resp.tee.clone_from(&self.tee);
        Ok(resp)
    }
}

/// The agent's resident set size in KiB, from `/proc/self/status`.
pub(crate) fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss_kib(&status)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\ttsuba-agent\nVmPeak:\t  9000 kB\nVmRSS:\t    4242 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4242));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn own_rss_is_read_from_proc() {
        // This test process has a resident set; zero would mean the parse silently failed.
        assert!(resident_kib().unwrap() > 0);
    }
}

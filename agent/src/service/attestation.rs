//! `Attestation`: evidence for the host's own checks, with report data the host cannot choose.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{info, warn};
use tsuba_attestation_agent::attester::{Attester, Evidence};
use tsuba_policy::AgentRequest;
use tsuba_protocols::agent::{
    Attestation, DiagnosticReportRequest, DiagnosticReportResponse, MAX_DIAGNOSTIC_NONCE,
    diagnostic_report_data,
};
use tsuba_protocols::evidence::ReportData;
use ttrpc::asynchronous::TtrpcContext;

use crate::initdata::Gate;

/// The `Attestation` service over the guest's attester, if it has one.
#[derive(Debug, Clone)]
pub struct AttestationService {
    attester: Result<Arc<dyn Attester>, String>,
    gate: Arc<Gate>,
}

impl AttestationService {
    /// A service over `attester`, or one that explains why there is none; each request decided
    /// by `gate`.
    pub fn new(attester: Result<Arc<dyn Attester>, String>, gate: Arc<Gate>) -> Self {
        AttestationService { attester, gate }
    }
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

#[async_trait]
impl Attestation for AttestationService {
    async fn get_diagnostic_report(
        &self,
        _ctx: &TtrpcContext,
        req: DiagnosticReportRequest,
    ) -> ttrpc::Result<DiagnosticReportResponse> {
        self.gate
            .admit(
                AgentRequest::DiagnosticReport,
                || serde_json::json!({"nonce_len": req.nonce.len()}),
            )
            .map_err(|e| e.to_status())?;
        if req.nonce.len() > MAX_DIAGNOSTIC_NONCE {
            return Err(status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("nonce longer than {MAX_DIAGNOSTIC_NONCE} bytes"),
            ));
        }
        let attester = match &self.attester {
            Ok(attester) => Arc::clone(attester),
            Err(why) => return Err(status(ttrpc::Code::FAILED_PRECONDITION, why.clone())),
        };
        let report_data = ReportData(diagnostic_report_data(&req.nonce));
        let kind = attester.kind();
        // Attesters do blocking device I/O.
        let evidence = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("attester task failed: {e}")))?
            .map_err(|e| {
                warn!(error = %e, "diagnostic report failed");
                status(ttrpc::Code::UNAVAILABLE, format!("{kind} attester: {e}"))
            })?;
        info!(attester = %kind, "diagnostic report produced");
        let mut resp = DiagnosticReportResponse::new();
        resp.attester = kind.to_string();
        match evidence {
            Evidence::Snp { report, cert_table } => {
                resp.evidence = report;
                resp.cert_table = cert_table.unwrap_or_default();
            }
            Evidence::Tdx { quote, .. } => resp.evidence = quote,
        }
        Ok(resp)
    }
}

//! `Initdata`: the host gives the guest the pod's initdata, once, before anything else.

use std::sync::Arc;

use async_trait::async_trait;
use tsuba_protocols::agent::{Initdata, ProvideInitdataRequest, ProvideInitdataResponse};
use ttrpc::asynchronous::TtrpcContext;

use crate::initdata::Gate;

/// The `Initdata` service over the agent's gate.
#[derive(Debug, Clone)]
pub struct InitdataService {
    gate: Arc<Gate>,
}

impl InitdataService {
    /// A service that hands documents to `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        InitdataService { gate }
    }
}

#[async_trait]
impl Initdata for InitdataService {
    async fn provide(
        &self,
        _ctx: &TtrpcContext,
        req: ProvideInitdataRequest,
    ) -> ttrpc::Result<ProvideInitdataResponse> {
        let provided = self
            .gate
            .provide(&req.document)
            .await
            .map_err(|e| e.to_status())?;
        let mut resp = ProvideInitdataResponse::new();
        resp.binding = provided.binding;
        resp.algorithm = provided.algorithm.to_owned();
        resp.policy = provided.policy.as_str().to_owned();
        resp.agent_rss_kib = super::health::resident_kib().unwrap_or(0);
        Ok(resp)
    }
}

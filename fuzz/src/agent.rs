//! The agent API as the guest decodes it: ttrpc frames, the `Request` envelope, and each
//! method's protobuf message, dispatched to the agent's own service handlers exactly as the
//! ttrpc server does (`ttrpc::asynchronous::Server` reads a `GenMessage`, converts it to
//! `Message<Request>`, finds the service and method and calls its handler). The Container
//! service parses and checks the host's OCI spec before it needs cgroups, which the target
//! does not have: a spec that passes every check is refused as "unavailable", nothing runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tsuba_agent::{
    AttestationService, ContainerService, Containers, Gate, GuestPuller, HealthService,
    ImageService, InitdataService, PullConfig, Reaper, Runner,
};
use tsuba_protocols::agent::{
    create_attestation, create_container, create_health, create_image, create_initdata,
};
use ttrpc::asynchronous::{Service, TtrpcContext};
use ttrpc::proto::{GenMessage, MESSAGE_TYPE_REQUEST, Message, Request};

use crate::block_on;

/// Most frames one input may carry.
const MAX_FRAMES: usize = 16;

/// The agent's five services, as `tsuba_agent::serve_all` registers them: the image service has
/// no broker configured and the attestation service no attester, so nothing leaves the process
/// (a pull is refused after the request is checked), and the container service has no cgroups
/// (a create is refused after the spec is checked). Without a TEE the gate is open, and an
/// initdata document the input provides is parsed, its settings checked and its policy compiled.
fn services() -> &'static HashMap<String, Service> {
    static SERVICES: OnceLock<HashMap<String, Service>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let puller = Arc::new(GuestPuller::with_images_dir(
            PullConfig::default(),
            Err("no attester in the fuzz target".into()),
            PathBuf::from("/nonexistent/tsuba-fuzz/images"),
        ));
        let gate = Arc::new(Gate::new(
            Err("no attester in the fuzz target".into()),
            Arc::clone(&puller),
        ));
        let health: Arc<dyn tsuba_protocols::agent::Health + Send + Sync> = Arc::new(
            HealthService::new(Instant::now(), "none", Arc::clone(&gate)),
        );
        let initdata: Arc<dyn tsuba_protocols::agent::Initdata + Send + Sync> =
            Arc::new(InitdataService::new(Arc::clone(&gate)));
        let attestation: Arc<dyn tsuba_protocols::agent::Attestation + Send + Sync> =
            Arc::new(AttestationService::new(
                Err("no attester in the fuzz target".into()),
                Arc::clone(&gate),
            ));
        let image: Arc<dyn tsuba_protocols::agent::Image + Send + Sync> =
            Arc::new(ImageService::new(Arc::clone(&puller), Arc::clone(&gate)));
        let containers = Containers::new(
            puller,
            Runner::new(
                PathBuf::from("/nonexistent/tsuba-fuzz/exe"),
                PathBuf::from("/nonexistent/tsuba-fuzz/control"),
                PathBuf::from("/nonexistent/tsuba-fuzz/root"),
                Reaper::new(),
            ),
            Err("no cgroups in the fuzz target".into()),
            PathBuf::from("/nonexistent/tsuba-fuzz/run"),
        );
        let container: Arc<dyn tsuba_protocols::agent::Container + Send + Sync> =
            Arc::new(ContainerService::new(containers, gate));
        let mut services = create_health(health);
        services.extend(create_initdata(initdata));
        services.extend(create_attestation(attestation));
        services.extend(create_image(image));
        services.extend(create_container(container));
        services
    })
}

/// A byte stream from the host: up to [`MAX_FRAMES`] ttrpc frames, each handled as a request.
pub(crate) fn agent_request(data: &[u8]) {
    block_on(async {
        let mut stream = data;
        for _ in 0..MAX_FRAMES {
            let Ok(message) = GenMessage::read_from(&mut stream).await else {
                return;
            };
            if message.header.type_ != MESSAGE_TYPE_REQUEST {
                continue;
            }
            let Ok(request) = Message::<Request>::try_from(message) else {
                continue;
            };
            handle(request).await;
        }
    });
}

async fn handle(request: Message<Request>) {
    let header = request.header;
    let req = request.payload;
    let Some(service) = services().get(&req.service) else {
        return;
    };
    // A long-poll that waits for an OOM kill, which never comes here.
    if req.method == "GetOOMEvent" {
        return;
    }
    let Some(method) = service.methods.get(&req.method) else {
        return;
    };
    let ctx = TtrpcContext {
        mh: header,
        metadata: ttrpc::context::from_pb(&req.metadata),
        timeout_nano: req.timeout_nano,
        connection_data: Arc::default(),
    };
    // Handlers answer at once here (no broker, no attester): bound them anyway.
    let _ = tokio::time::timeout(Duration::from_secs(5), method.handler(ctx, req)).await;
}

//! The agent API server: the ttrpc services, registered on one server over the chosen transport.

mod attestation;
mod container;
mod health;
mod image;
mod initdata;

use std::sync::Arc;

pub use attestation::AttestationService;
pub use container::ContainerService;
pub use health::HealthService;
pub use image::ImageService;
pub use initdata::InitdataService;
use thiserror::Error;
use ttrpc::asynchronous::Server;
use ttrpc::asynchronous::transport::Listener;

/// Starting the agent API server failed.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// ttrpc refused to start.
    #[error("cannot start the agent API server")]
    Start(#[source] ttrpc::Error),
}

/// Starts serving the agent API without the Container service on `listener`. The server runs
/// in background tasks until the returned handle is dropped or shut down.
pub async fn serve(
    listener: Listener,
    health: HealthService,
    initdata: InitdataService,
    attestation: AttestationService,
    image: ImageService,
) -> Result<Server, ServiceError> {
    serve_all(listener, health, initdata, attestation, image, None).await
}

/// Starts serving the agent API on `listener`, with the Container service when given.
pub async fn serve_all(
    listener: Listener,
    health: HealthService,
    initdata: InitdataService,
    attestation: AttestationService,
    image: ImageService,
    container: Option<ContainerService>,
) -> Result<Server, ServiceError> {
    let health: Arc<dyn tsuba_protocols::agent::Health + Send + Sync> = Arc::new(health);
    let initdata: Arc<dyn tsuba_protocols::agent::Initdata + Send + Sync> = Arc::new(initdata);
    let attestation: Arc<dyn tsuba_protocols::agent::Attestation + Send + Sync> =
        Arc::new(attestation);
    let image: Arc<dyn tsuba_protocols::agent::Image + Send + Sync> = Arc::new(image);
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(tsuba_protocols::agent::create_health(health))
        .register_service(tsuba_protocols::agent::create_initdata(initdata))
        .register_service(tsuba_protocols::agent::create_attestation(attestation))
        .register_service(tsuba_protocols::agent::create_image(image));
    if let Some(container) = container {
        let container: Arc<dyn tsuba_protocols::agent::Container + Send + Sync> =
            Arc::new(container);
        server = server.register_service(tsuba_protocols::agent::create_container(container));
    }
    server.start().await.map_err(ServiceError::Start)?;
    Ok(server)
}

//! The agent API server: the ttrpc services, registered on one server over the chosen transport.

mod health;

use std::sync::Arc;

pub use health::HealthService;
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

/// Starts serving the agent API on `listener`. The server runs in background tasks until the
/// returned handle is dropped or shut down.
pub async fn serve(listener: Listener, health: HealthService) -> Result<Server, ServiceError> {
    let health: Arc<dyn tsuba_protocols::agent::Health + Send + Sync> = Arc::new(health);
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(tsuba_protocols::agent::create_health(health));
    server.start().await.map_err(ServiceError::Start)?;
    Ok(server)
}

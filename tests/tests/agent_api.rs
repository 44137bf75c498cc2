//! The host's agent client against the real agent service, in process, over a Unix socket pair:
//! the protocol both ends speak, without a VM.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tsuba_agent::{
    AttestationService, Gate, GuestPuller, HealthService, ImageService, InitdataService, PullConfig,
};
use tsuba_protocols::agent::{
    HELLO, MAX_DIAGNOSTIC_NONCE, MAX_IMAGE_REFERENCE, PROTOCOL_VERSION, ServingStatus,
};
use tsuba_shim::{AgentClient, AgentClientError};
use ttrpc::asynchronous::transport::Listener;

/// The agent's server on one end of a socket pair, the hello written as the agent's transport
/// does; returns the host end and the server (kept alive by the caller).
async fn agent_on_socketpair() -> (tokio::net::UnixStream, ttrpc::asynchronous::Server) {
    let (host, mut guest) = tokio::net::UnixStream::pair().unwrap();
    guest.write_all(HELLO).await.unwrap();
    let listener = Listener::new(
        futures::stream::iter([Ok::<_, std::io::Error>(guest)]).chain(futures::stream::pending()),
    );
    let puller = std::sync::Arc::new(GuestPuller::new(
        PullConfig::default(),
        Err("no tee found".into()),
    ));
    // No TEE: the gate is open, as in a guest without one.
    let gate = std::sync::Arc::new(Gate::new(
        Err("no tee found".into()),
        std::sync::Arc::clone(&puller),
    ));
    let server = tsuba_agent::serve(
        listener,
        HealthService::new(Instant::now(), "none", std::sync::Arc::clone(&gate)),
        InitdataService::new(std::sync::Arc::clone(&gate)),
        AttestationService::new(Err("no tee found".into()), std::sync::Arc::clone(&gate)),
        ImageService::new(puller, gate),
    )
    .await
    .unwrap();
    (host, server)
}

/// The ttrpc status of a failed call to `method`; panics on any other outcome.
fn rpc_status<T: std::fmt::Debug>(
    result: Result<T, AgentClientError>,
    method: &str,
) -> ttrpc::proto::Status {
    match result {
        Err(AgentClientError::Rpc {
            method: m,
            source: ttrpc::Error::RpcStatus(status),
        }) if m == method => status,
        other => panic!("expected an RPC status from {method}, got {other:?}"),
    }
}

#[tokio::test]
async fn health_check_and_version_round_trip() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let before = Instant::now();
    let check = client.check(Duration::from_secs(5)).await.unwrap();
    assert_eq!(check.status.enum_value_or_default(), ServingStatus::SERVING);
    // The agent runs in this process: its resident set is this process's, never zero.
    assert!(check.agent_rss_kib > 0);
    // Uptime counts from the agent's start, which is before this call and after the test began.
    assert!(
        u128::from(check.uptime_ms) <= before.elapsed().as_millis() + 5_000,
        "{}",
        check.uptime_ms
    );
    let version = client.version(Duration::from_secs(5)).await.unwrap();
    assert_eq!(version.protocol_version, PROTOCOL_VERSION);
    assert_eq!(version.tee, "none");
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(version.kernel_release, release.trim());
}

#[tokio::test]
async fn image_pull_without_a_measured_broker_is_refused_with_the_missing_option() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let status = rpc_status(
        client
            .pull_image("127.0.0.1:5000/app:v1", Duration::from_secs(10))
            .await,
        "Image.Pull",
    );
    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(
        status.message,
        "image pulls are not configured in this guest: initdata names no key broker \
         (aa.toml [token_configs.kbs] url)"
    );
}

#[tokio::test]
async fn a_bad_image_reference_is_invalid_before_anything_else_is_checked() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    // The host client refuses what it can tell is wrong without a call.
    for image in [String::new(), "a".repeat(MAX_IMAGE_REFERENCE + 1)] {
        let err = client
            .pull_image(&image, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentClientError::ImageReference),
            "{}: {err:?}",
            image.len()
        );
    }
    // What only the agent checks: a space, a control byte, a non-ASCII byte. Refused as
    // INVALID_ARGUMENT even in a guest where pulls are not configured.
    for image in ["app:v1 --x", "app:v1\n", "app:v1\u{7f}", "ap\u{e9}:v1"] {
        let status = rpc_status(
            client.pull_image(image, Duration::from_secs(5)).await,
            "Image.Pull",
        );
        assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT, "{image:?}");
        assert_eq!(
            status.message,
            format!(
                "image reference is empty, longer than {MAX_IMAGE_REFERENCE} bytes, or not \
                 printable"
            )
        );
    }
}

#[tokio::test]
async fn many_calls_share_one_connection() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let calls = (0..32).map(|_| client.check(Duration::from_secs(5)));
    for result in futures::future::join_all(calls).await {
        assert_eq!(
            result.unwrap().status.enum_value_or_default(),
            ServingStatus::SERVING
        );
    }
}

#[tokio::test]
async fn a_call_after_the_agent_is_gone_fails_instead_of_hanging() {
    let (host, server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    drop(server);
    // The server's connection tasks end with it; the call must fail within its deadline rather
    // than wait forever, and it must not succeed.
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.check(Duration::from_secs(2)),
    )
    .await
    .expect("the call is bounded by its deadline");
    match result {
        Err(AgentClientError::Rpc {
            method: "Health.Check",
            ..
        }) => {}
        other => panic!("expected a failed Health.Check, got {other:?}"),
    }
}

#[tokio::test]
async fn a_guest_without_a_tee_refuses_a_report_and_says_why() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let status = rpc_status(
        client
            .diagnostic_report(b"nonce", Duration::from_secs(5))
            .await,
        "Attestation.GetDiagnosticReport",
    );
    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(status.message, "no tee found");
    // The largest nonce allowed reaches the same refusal: it is not an argument error.
    let status = rpc_status(
        client
            .diagnostic_report(&[0u8; MAX_DIAGNOSTIC_NONCE], Duration::from_secs(5))
            .await,
        "Attestation.GetDiagnosticReport",
    );
    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert_eq!(status.message, "no tee found");
}

#[tokio::test]
async fn an_oversized_nonce_is_invalid_even_before_the_tee_is_asked() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let status = rpc_status(
        client
            .diagnostic_report(&[0u8; MAX_DIAGNOSTIC_NONCE + 1], Duration::from_secs(5))
            .await,
        "Attestation.GetDiagnosticReport",
    );
    assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(status.message, "nonce longer than 64 bytes");
}

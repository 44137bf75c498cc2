//! The host's agent client against the real agent service, in process, over a Unix socket pair:
//! the protocol both ends speak, without a VM.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tsuba_agent::{AttestationService, GuestPuller, HealthService, ImageService, PullConfig};
use tsuba_protocols::agent::{HELLO, PROTOCOL_VERSION, ServingStatus};
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
    let server = tsuba_agent::serve(
        listener,
        HealthService::new(Instant::now(), "none", true),
        AttestationService::new(Err("no tee found".into())),
        ImageService::new(GuestPuller::new(
            PullConfig::default(),
            Err("no tee found".into()),
        )),
    )
    .await
    .unwrap();
    (host, server)
}

#[tokio::test]
async fn health_check_and_version_round_trip() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let check = client.check(Duration::from_secs(5)).await.unwrap();
    assert_eq!(check.status.enum_value_or_default(), ServingStatus::SERVING);
    assert!(check.agent_rss_kib > 0);
    let version = client.version(Duration::from_secs(5)).await.unwrap();
    assert_eq!(version.protocol_version, PROTOCOL_VERSION);
    assert_eq!(version.tee, "none");
    assert!(!version.kernel_release.is_empty());
}

#[tokio::test]
async fn image_pull_without_a_measured_broker_is_refused_with_the_missing_option() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let err = client
        .pull_image("127.0.0.1:5000/app:v1", Duration::from_secs(10))
        .await
        .unwrap_err();
    match err {
        AgentClientError::Rpc {
            method: "Image.Pull",
            source: ttrpc::Error::RpcStatus(status),
        } => {
            assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
            assert!(
                status.message.contains("tsuba.agent.kbs"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected {other:?}"),
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
    // The server's connection tasks end with it; the call must return an error within its
    // deadline rather than wait forever.
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.check(Duration::from_secs(2)),
    )
    .await
    .expect("the call is bounded by its deadline");
    if let Err(err) = result {
        assert!(matches!(err, AgentClientError::Rpc { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_guest_without_a_tee_refuses_a_report_and_says_why() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let err = client
        .diagnostic_report(b"nonce", Duration::from_secs(5))
        .await
        .unwrap_err();
    match err {
        AgentClientError::Rpc {
            source: ttrpc::Error::RpcStatus(status),
            ..
        } => {
            assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
            assert!(
                status.message().contains("no tee found"),
                "{}",
                status.message()
            );
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn an_oversized_nonce_is_invalid_even_before_the_tee_is_asked() {
    let (host, _server) = agent_on_socketpair().await;
    let client = AgentClient::handshake(host, Duration::from_secs(5))
        .await
        .unwrap();
    let err = client
        .diagnostic_report(&[0u8; 65], Duration::from_secs(5))
        .await
        .unwrap_err();
    match err {
        AgentClientError::Rpc {
            source: ttrpc::Error::RpcStatus(status),
            ..
        } => assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT),
        other => panic!("unexpected {other}"),
    }
}

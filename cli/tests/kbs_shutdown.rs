//! `tsuba kbs serve` stops gracefully on SIGTERM and SIGINT: it finishes the request in flight,
//! stops accepting connections and exits 0. Runs the real binary on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The broker process; killed on drop if the test did not stop it.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tsuba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tsuba"))
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(dir: &Path) -> Broker {
    let public = dir.join("admin.pub");
    let status = tsuba()
        .args(["kbs", "admin-keygen", "--private"])
        .arg(dir.join("admin.key"))
        .arg("--public")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success());
    let addr = free_port();
    let child = tsuba()
        .args(["kbs", "serve", "--insecure-plain-http", "--listen"])
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin-public-key")
        .arg(&public)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn signal(broker: &Broker, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(broker.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(broker: &mut Broker, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = broker.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "broker did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const AUTH: &str = r#"{"version":"0.4.0","tee":"snp","extra-params":""}"#;

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    // A request whose head and half its body have arrived: in flight when the signal comes.
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (first, rest) = AUTH.split_at(10);
    write!(
        stream,
        "POST /kbs/v0/auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{first}",
        AUTH.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&broker, "TERM");
    // New connections are refused once the broker stops accepting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(broker.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.child.try_wait().unwrap().is_none(), "exited early");
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"nonce\""), "{response}");
    let status = wait_exit(&mut broker, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigint_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    signal(&broker, "INT");
    let status = wait_exit(&mut broker, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

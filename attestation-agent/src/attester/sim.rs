//! The simulated attesters: evidence from tee-sim on the host, over the dedicated virtio-serial
//! port `tsuba.teesim` (protocol: `tsuba_protocols::simdev`). The evidence has the real binary
//! formats but is signed by simulated roots that no production broker trusts.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;
use tsuba_protocols::evidence::ReportData;
use tsuba_protocols::simdev::{
    self, ErrorCode, HEADER_LEN, MAX_RESPONSE_LEN, Request, Response, SimDevError, SimTee,
};

use super::{Attester, AttesterError, AttesterKind, Evidence, check_report_data};

/// Name of the virtio-serial port the launcher exposes in sim mode.
pub const SIM_DEVICE_NAME: &str = "tsuba.teesim";
/// Stale replies (to requests a previous client gave up on) skipped before giving up.
const MAX_STALE_REPLIES: usize = 8;

/// Errors talking to the sim device.
#[derive(Debug, Error)]
pub enum SimDeviceError {
    /// Reading or writing the device failed.
    #[error("sim device i/o")]
    Io(#[from] io::Error),
    /// The device sent something that is not a valid reply.
    #[error("sim device protocol")]
    Protocol(#[from] SimDevError),
    /// The simulator refused the request.
    #[error("sim device refused the request ({code:?}): {message}")]
    Refused {
        /// Error code.
        code: ErrorCode,
        /// The simulator's message.
        message: String,
    },
    /// The reply is of the wrong kind for the request.
    #[error("sim device sent an unexpected reply")]
    UnexpectedReply,
    /// Only stale replies came back.
    #[error("sim device replies do not match the request")]
    NoMatchingReply,
}

/// Anything the sim device can be reached through (the port's character device, a socket).
pub trait SimStream: Read + Write + Send {}
impl<T: Read + Write + Send> SimStream for T {}

/// A simulated SNP or TDX attester over the sim device.
pub struct SimDeviceAttester {
    stream: Mutex<Box<dyn SimStream>>,
    tee: SimTee,
    next_id: AtomicU32,
}

impl fmt::Debug for SimDeviceAttester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDeviceAttester")
            .field("tee", &self.tee)
            .finish_non_exhaustive()
    }
}

impl SimDeviceAttester {
    /// Open the port's device (e.g. `/dev/virtio-ports/tsuba.teesim`) and ask which TEE it
    /// simulates.
    pub fn open(path: &Path) -> Result<Self, SimDeviceError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_stream(Box::new(file))
    }

    /// Use an already open stream to the simulator.
    pub fn from_stream(stream: Box<dyn SimStream>) -> Result<Self, SimDeviceError> {
        let mut this = Self {
            stream: Mutex::new(stream),
            tee: SimTee::Snp,
            // Start from a random-ish id so replies to a previous process's requests never match.
            next_id: AtomicU32::new(std::process::id().rotate_left(16)),
        };
        this.tee = match this.call(&Request::Info)? {
            Response::Info { tee } => tee,
            _ => return Err(SimDeviceError::UnexpectedReply),
        };
        Ok(this)
    }

    /// The simulated TEE.
    pub fn tee(&self) -> SimTee {
        self.tee
    }

    fn call(&self, req: &Request) -> Result<Response, SimDeviceError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stream.write_all(&simdev::encode_request(id, req))?;
        stream.flush()?;
        for _ in 0..=MAX_STALE_REPLIES {
            let mut header = [0u8; HEADER_LEN];
            stream.read_exact(&mut header)?;
            let len = simdev::parse_header(&header, MAX_RESPONSE_LEN)?;
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body)?;
            let (reply_id, response) = simdev::decode_response(&body)?;
            if reply_id != id {
                continue;
            }
            return match response {
                Response::Error { code, message } => Err(SimDeviceError::Refused { code, message }),
                other => Ok(other),
            };
        }
        Err(SimDeviceError::NoMatchingReply)
    }
}

impl Attester for SimDeviceAttester {
    fn kind(&self) -> AttesterKind {
        match self.tee {
            SimTee::Snp => AttesterKind::SimSnp,
            SimTee::Tdx => AttesterKind::SimTdx,
        }
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError> {
        let report_data = *report_data;
        let evidence = match self.tee {
            SimTee::Snp => match self.call(&Request::SnpReport {
                report_data,
                vmpl: 0,
            })? {
                Response::SnpReport { report, cert_table } => Evidence::Snp {
                    report,
                    cert_table: Some(cert_table),
                },
                _ => return Err(SimDeviceError::UnexpectedReply.into()),
            },
            SimTee::Tdx => {
                let quote = match self.call(&Request::TdxQuote { report_data })? {
                    Response::TdxQuote { quote } => quote,
                    _ => return Err(SimDeviceError::UnexpectedReply.into()),
                };
                let cc_eventlog = match self.call(&Request::TdxEventLog)? {
                    Response::TdxEventLog { log } if log.is_empty() => None,
                    Response::TdxEventLog { log } => Some(log),
                    _ => return Err(SimDeviceError::UnexpectedReply.into()),
                };
                Evidence::Tdx { quote, cc_eventlog }
            }
        };
        check_report_data(evidence, &report_data)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    use tsuba_protocols::evidence::TdxQuote;
    use tsuba_protocols::evidence::{GUID_ARK, SnpCertTable, SnpReport};
    use tsuba_tee_sim::{SimAmdSp, SimLaunch, SimTdx, SnpLaunch, TdxLaunch};

    use super::*;

    /// A real tee-sim device server on one end of a socket pair, stopped when dropped.
    struct Server {
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_timeout(Duration::from_secs(5));
            }
        }
    }

    fn sim() -> Arc<SimAmdSp> {
        static SIM: std::sync::OnceLock<(tempfile::TempDir, Arc<SimAmdSp>)> =
            std::sync::OnceLock::new();
        SIM.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let sp = SimAmdSp::open_or_create_with_published_test_roots(dir.path()).unwrap();
            (dir, Arc::new(sp))
        })
        .1
        .clone()
    }

    fn start() -> (UnixStream, Server) {
        start_with(SimLaunch::Snp {
            sp: sim(),
            launch: SnpLaunch::new([0x44; 48], [0x55; 32]),
        })
    }

    fn start_with(launch: SimLaunch) -> (UnixStream, Server) {
        let (guest, host) = UnixStream::pair().unwrap();
        guest
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        host.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let host = tokio::net::UnixStream::from_std(host).unwrap();
            tsuba_tee_sim::serve(host, launch).await
        });
        (
            guest,
            Server {
                runtime: Some(runtime),
            },
        )
    }

    #[test]
    fn sim_snp_evidence_through_the_real_server() {
        let (guest, _server) = start();
        let attester = SimDeviceAttester::from_stream(Box::new(guest)).unwrap();
        assert_eq!(attester.kind(), AttesterKind::SimSnp);
        let rd = ReportData([0x66; 64]);
        let evidence = attester.evidence(&rd).unwrap();
        let Evidence::Snp { report, cert_table } = &evidence else {
            panic!("not snp")
        };
        let parsed = SnpReport::parse(report).unwrap();
        assert_eq!(parsed.measurement, [0x44; 48]);
        assert_eq!(parsed.host_data, [0x55; 32]);
        assert_eq!(parsed.report_data, [0x66; 64]);
        let table = SnpCertTable::parse(cert_table.as_ref().unwrap()).unwrap();
        assert_eq!(table.get(&GUID_ARK), Some(sim().ark_der()));
        // A second request on the same stream works too.
        let again = attester.evidence(&ReportData([0x77; 64])).unwrap();
        assert_eq!(
            again.claims().unwrap().report_data(),
            &ReportData([0x77; 64])
        );
    }

    #[test]
    fn sim_tdx_evidence_through_the_real_server() {
        let dir = tempfile::tempdir().unwrap();
        let tdx = Arc::new(SimTdx::open_or_create(dir.path()).unwrap());
        let boot = tsuba_protocols::evidence::ccel::TdvfBoot {
            kernel_authenticode: [0x31; 48],
            kernel_len: 1,
            initrd: Some([0x32; 48]),
            cmdline: Some("quiet".into()),
        };
        let (guest, _server) = start_with(SimLaunch::Tdx {
            sim: Arc::clone(&tdx),
            launch: Box::new(TdxLaunch::new([0x21; 48], [0x43; 48]).with_boot(&boot)),
        });
        let attester = SimDeviceAttester::from_stream(Box::new(guest)).unwrap();
        assert_eq!(attester.kind(), AttesterKind::SimTdx);
        let rd = ReportData([0x65; 64]);
        let Evidence::Tdx { quote, cc_eventlog } = attester.evidence(&rd).unwrap() else {
            panic!("not tdx")
        };
        let parsed = TdxQuote::parse(&quote).unwrap();
        assert_eq!(parsed.body.mr_td, [0x21; 48]);
        assert_eq!(parsed.body.mr_config_id, [0x43; 48]);
        assert_eq!(parsed.body.report_data, [0x65; 64]);
        // The log the launcher computed, replaying to the quote's RTMRs.
        let log = tsuba_protocols::evidence::ccel::EventLog::parse(&cc_eventlog.unwrap()).unwrap();
        assert_eq!(log, boot.event_log());
        log.verify(&parsed.body.rtmr, 0..4).unwrap();
        // A launch without a boot log sends none.
        let (guest, _server) = start_with(SimLaunch::Tdx {
            sim: tdx,
            launch: Box::new(TdxLaunch::new([0x21; 48], [0x43; 48])),
        });
        let attester = SimDeviceAttester::from_stream(Box::new(guest)).unwrap();
        let Evidence::Tdx { cc_eventlog, .. } = attester.evidence(&rd).unwrap() else {
            panic!("not tdx")
        };
        assert_eq!(cc_eventlog, None);
    }

    #[test]
    fn stale_replies_are_skipped() {
        let (mut guest, _server) = start();
        // A request whose reply nobody read (an earlier client gave up).
        guest
            .write_all(&simdev::encode_request(1, &Request::Info))
            .unwrap();
        let attester = SimDeviceAttester::from_stream(Box::new(guest)).unwrap();
        let evidence = attester.evidence(&ReportData([1; 64])).unwrap();
        assert!(matches!(evidence, Evidence::Snp { .. }));
    }

    #[test]
    fn refusals_and_garbage_are_typed_errors() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let reply = simdev::encode_response(
            0,
            &Response::Error {
                code: ErrorCode::Internal,
                message: "no".into(),
            },
        )
        .unwrap();
        // The first id the attester uses is derived from the pid.
        let id = std::process::id().rotate_left(16);
        let mut refused = reply;
        refused[HEADER_LEN + 2..HEADER_LEN + 6].copy_from_slice(&id.to_le_bytes());
        b.write_all(&refused).unwrap();
        assert!(matches!(
            SimDeviceAttester::from_stream(Box::new(a)),
            Err(SimDeviceError::Refused {
                code: ErrorCode::Internal,
                ..
            })
        ));
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        b.write_all(b"XXXXXXXXXXXXXXXX").unwrap();
        assert!(matches!(
            SimDeviceAttester::from_stream(Box::new(a)),
            Err(SimDeviceError::Protocol(SimDevError::BadMagic))
        ));
    }
}

//! The sim device: serves one guest its evidence over a byte stream (in practice the host end
//! of the virtio-serial port `tsuba.teesim`), speaking `tsuba_protocols::simdev`.
//!
//! Everything that identifies the launch (measurement, HOST_DATA, policy, TCB) is fixed by the
//! launcher in [`SimLaunch`] before the guest runs; a request carries only the guest's report
//! data and VMPL. A malformed, oversized or unknown request gets an error reply and the server
//! goes on: after garbage it resynchronises on the next frame magic. It returns when the guest
//! side closes the stream.

use std::sync::Arc;

use sha2::{Digest, Sha384};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::{debug, warn};
use tsuba_protocols::evidence::ccel::TdvfBoot;
use tsuba_protocols::evidence::{GuestPolicy, SnpReportVersion, TcbParts, TdxQuoteVersion};
use tsuba_protocols::simdev::{
    self, ErrorCode, HEADER_LEN, MAGIC, MAX_REQUEST_LEN, Request, Response, SimDevError, SimTee,
};

use crate::snp::{SIM_DEFAULT_POLICY, SIM_DEFAULT_TCB, SimAmdSp, SnpReportRequest};
use crate::tdx::{SIM_TD_ATTRIBUTES, SIM_TEE_TCB_SVN, SIM_XFAM, SimTdx, TdxQuoteRequest};

/// Highest VMPL a guest can ask a report from.
const MAX_VMPL: u32 = 3;

/// Errors that end [`serve`].
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Reading from or writing to the stream failed.
    #[error("sim device stream")]
    Io(#[from] std::io::Error),
    /// A reply could not be encoded (a bug: replies are bounded).
    #[error("encoding a sim device reply")]
    Encode(#[from] SimDevError),
}

/// What the launcher decided for an SNP guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLaunch {
    /// Launch measurement, as computed for the files being booted.
    pub measurement: [u8; 48],
    /// HOST_DATA (tsuba: the initdata digest).
    pub host_data: [u8; 32],
    /// Guest policy.
    pub policy: GuestPolicy,
    /// Report version to produce (3 or 5).
    pub version: SnpReportVersion,
    /// Platform TCB.
    pub tcb: TcbParts,
}

impl SnpLaunch {
    /// A launch with the default policy and TCB, producing version 3 reports.
    pub fn new(measurement: [u8; 48], host_data: [u8; 32]) -> Self {
        Self {
            measurement,
            host_data,
            policy: SIM_DEFAULT_POLICY,
            version: SnpReportVersion::V3,
            tcb: SIM_DEFAULT_TCB,
        }
    }
}

/// What the launcher decided for a TDX guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxLaunch {
    /// MRTD, as computed for the firmware being booted.
    pub mr_td: [u8; 48],
    /// MRCONFIGID (tsuba: the initdata digest).
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR 0 to 3 as the launcher computed them (the sim guest cannot extend them).
    pub rtmr: [[u8; 48]; 4],
    /// The CC event log (CCEL format) that explains the RTMRs, empty when there is none.
    pub event_log: Vec<u8>,
    /// Quote version to produce.
    pub version: TdxQuoteVersion,
    /// TEE TCB SVN.
    pub tee_tcb_svn: [u8; 16],
    /// TD attributes.
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
}

impl TdxLaunch {
    /// A launch with default attributes and TCB, zero owner fields and RTMRs, v4 quotes.
    pub fn new(mr_td: [u8; 48], mr_config_id: [u8; 48]) -> Self {
        Self {
            mr_td,
            mr_config_id,
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
            event_log: Vec::new(),
            version: TdxQuoteVersion::V4,
            tee_tcb_svn: SIM_TEE_TCB_SVN,
            td_attributes: SIM_TD_ATTRIBUTES,
            xfam: SIM_XFAM,
        }
    }

    /// The RTMRs and CC event log of this direct kernel boot: each RTMR starts at zero and is
    /// extended with each event's digest, as TDVF and the kernel's EFI stub do on hardware (see
    /// `tsuba_protocols::evidence::ccel`), so the quote matches `tsuba measure`'s prediction.
    #[must_use]
    pub fn with_boot(mut self, boot: &TdvfBoot) -> Self {
        let log = boot.event_log();
        let mut rtmr = [[0u8; 48]; 4];
        for event in log.events() {
            if let Some(register) = rtmr.get_mut(event.rtmr) {
                *register = Sha384::new()
                    .chain_update(*register)
                    .chain_update(event.digest)
                    .finalize()
                    .into();
            }
        }
        self.rtmr = rtmr;
        self.event_log = log.to_bytes();
        self
    }
}

/// What only the launcher knows, and the simulator that signs for it.
#[derive(Debug, Clone)]
pub enum SimLaunch {
    /// A simulated SEV-SNP guest.
    Snp {
        /// The simulated AMD-SP.
        sp: Arc<SimAmdSp>,
        /// The launch.
        launch: SnpLaunch,
    },
    /// A simulated TDX guest.
    Tdx {
        /// The simulated TDX module and QE.
        sim: Arc<SimTdx>,
        /// The launch (boxed: it is several times larger than the SNP one).
        launch: Box<TdxLaunch>,
    },
}

impl SimLaunch {
    fn tee(&self) -> SimTee {
        match self {
            Self::Snp { .. } => SimTee::Snp,
            Self::Tdx { .. } => SimTee::Tdx,
        }
    }

    fn answer(&self, req: Request) -> Response {
        match (self, req) {
            (_, Request::Info) => Response::Info { tee: self.tee() },
            (_, Request::SnpReport { vmpl, .. }) if vmpl > MAX_VMPL => Response::Error {
                code: ErrorCode::Malformed,
                message: format!("vmpl {vmpl} out of range"),
            },
            (Self::Snp { sp, launch }, Request::SnpReport { report_data, vmpl }) => {
                let req = SnpReportRequest {
                    version: launch.version,
                    measurement: launch.measurement,
                    host_data: launch.host_data,
                    policy: launch.policy,
                    tcb: launch.tcb,
                    vmpl,
                    report_data,
                    family_id: [0; 16],
                    image_id: [0; 16],
                    guest_svn: 0,
                };
                match sp.report(&req) {
                    Ok(signed) => Response::SnpReport {
                        report: signed.report,
                        cert_table: signed.cert_table,
                    },
                    Err(e) => {
                        warn!(error = %e, "simulated snp report failed");
                        Response::Error {
                            code: ErrorCode::Internal,
                            message: "report generation failed".into(),
                        }
                    }
                }
            }
            (Self::Snp { .. }, Request::TdxQuote { .. } | Request::TdxEventLog) => {
                Response::Error {
                    code: ErrorCode::WrongTee,
                    message: "this guest is a simulated snp guest".into(),
                }
            }
            (Self::Tdx { .. }, Request::SnpReport { .. }) => Response::Error {
                code: ErrorCode::WrongTee,
                message: "this guest is a simulated tdx guest".into(),
            },
            (Self::Tdx { launch, .. }, Request::TdxEventLog) => Response::TdxEventLog {
                log: launch.event_log.clone(),
            },
            (Self::Tdx { sim, launch }, Request::TdxQuote { report_data }) => {
                let req = TdxQuoteRequest {
                    version: launch.version,
                    mr_td: launch.mr_td,
                    mr_config_id: launch.mr_config_id,
                    mr_owner: launch.mr_owner,
                    mr_owner_config: launch.mr_owner_config,
                    rtmr: launch.rtmr,
                    report_data,
                    tee_tcb_svn: launch.tee_tcb_svn,
                    td_attributes: launch.td_attributes,
                    xfam: launch.xfam,
                };
                match sim.quote(&req) {
                    Ok(quote) => Response::TdxQuote { quote },
                    Err(e) => {
                        warn!(error = %e, "simulated tdx quote failed");
                        Response::Error {
                            code: ErrorCode::Internal,
                            message: "quote generation failed".into(),
                        }
                    }
                }
            }
        }
    }
}

/// Serve one guest until it closes the stream.
pub async fn serve<S>(stream: S, launch: SimLaunch) -> Result<(), DeviceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let mut header = [0u8; HEADER_LEN];
    // Set when `header` already holds the next frame's header (found by resynchronising).
    let mut have_header = false;
    loop {
        if !have_header && !read_full(&mut read, &mut header).await? {
            return Ok(());
        }
        have_header = false;
        let body_len = match simdev::parse_header(&header, MAX_REQUEST_LEN) {
            Ok(len) => len,
            Err(e) => {
                warn!(error = %e, "bad sim device frame, resynchronising");
                reply(&mut write, 0, &error_response(&e)).await?;
                if !resync(&mut read, &mut header).await? {
                    return Ok(());
                }
                have_header = true;
                continue;
            }
        };
        let mut body = vec![0u8; body_len];
        if !read_full(&mut read, &mut body).await? {
            return Ok(());
        }
        let (id, response) = match simdev::decode_request(&body) {
            Ok((id, req)) => {
                debug!(id, request = ?req, "sim device request");
                (id, launch.answer(req))
            }
            Err(e) => {
                warn!(error = %e, "malformed sim device request");
                (simdev::body_id(&body).unwrap_or(0), error_response(&e))
            }
        };
        reply(&mut write, id, &response).await?;
    }
}

fn error_response(e: &SimDevError) -> Response {
    Response::Error {
        code: e.into(),
        message: e.to_string(),
    }
}

async fn reply<W: AsyncWrite + Unpin>(
    write: &mut W,
    id: u32,
    response: &Response,
) -> Result<(), DeviceError> {
    let frame = simdev::encode_response(id, response)?;
    write.write_all(&frame).await?;
    write.flush().await?;
    Ok(())
}

/// Fill `buf`; `false` on a clean end of stream before or inside it.
async fn read_full<R: AsyncRead + Unpin>(read: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    match read.read_exact(buf).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Slide over the input one byte at a time until `header` holds a frame magic and a length.
async fn resync<R: AsyncRead + Unpin>(
    read: &mut R,
    header: &mut [u8; HEADER_LEN],
) -> std::io::Result<bool> {
    loop {
        header.copy_within(1.., 0);
        let mut byte = [0u8; 1];
        if !read_full(read, &mut byte).await? {
            return Ok(false);
        }
        header[HEADER_LEN - 1] = byte[0];
        if header[..4] == MAGIC {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use p384::ecdsa::signature::Verifier;
    use tokio::io::DuplexStream;
    use tsuba_protocols::evidence::{
        GUID_VCEK, ReportData, SNP_SIGNED_LEN, SnpCertTable, SnpReport,
    };
    use tsuba_protocols::simdev::{MAX_RESPONSE_LEN, encode_request};
    use x509_cert::der::Decode;

    use super::*;
    use crate::snp::shared_test_sim;

    fn launch() -> SimLaunch {
        SimLaunch::Snp {
            sp: shared_test_sim().clone(),
            launch: SnpLaunch::new([0xAA; 48], [0xBB; 32]),
        }
    }

    /// The guest end, with the server running on the other end.
    fn start() -> (
        DuplexStream,
        tokio::task::JoinHandle<Result<(), DeviceError>>,
    ) {
        let (guest, host) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(serve(host, launch()));
        (guest, server)
    }

    async fn read_response(guest: &mut DuplexStream) -> (u32, Response) {
        let mut header = [0u8; HEADER_LEN];
        guest.read_exact(&mut header).await.unwrap();
        let len = simdev::parse_header(&header, MAX_RESPONSE_LEN).unwrap();
        let mut body = vec![0u8; len];
        guest.read_exact(&mut body).await.unwrap();
        simdev::decode_response(&body).unwrap()
    }

    async fn call(guest: &mut DuplexStream, id: u32, req: &Request) -> (u32, Response) {
        guest.write_all(&encode_request(id, req)).await.unwrap();
        read_response(guest).await
    }

    fn snp_request(byte: u8) -> Request {
        Request::SnpReport {
            report_data: ReportData([byte; 64]),
            vmpl: 0,
        }
    }

    fn check_report(resp: Response, report_data: u8) {
        let Response::SnpReport { report, cert_table } = resp else {
            panic!("not a report: {resp:?}")
        };
        let parsed = SnpReport::parse(&report).unwrap();
        assert_eq!(parsed.measurement, [0xAA; 48], "launcher's measurement");
        assert_eq!(parsed.host_data, [0xBB; 32], "launcher's host data");
        assert_eq!(parsed.report_data, [report_data; 64], "guest's report data");
        let table = SnpCertTable::parse(&cert_table).unwrap();
        let vcek = x509_cert::Certificate::from_der(table.get(&GUID_VCEK).unwrap()).unwrap();
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(
            vcek.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        )
        .unwrap();
        let (r, s) = parsed.signature.to_p384_be().unwrap();
        let sig = p384::ecdsa::Signature::from_scalars(r, s).unwrap();
        key.verify(&report[..SNP_SIGNED_LEN], &sig).unwrap();
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("test timed out")
    }

    #[test]
    fn tdx_launch_with_boot_extends_rtmrs_that_its_event_log_replays_to() {
        use tsuba_protocols::evidence::ccel::EventLog;
        let boot = TdvfBoot {
            kernel_authenticode: [7; 48],
            kernel_len: 10,
            initrd: Some([8; 48]),
            cmdline: Some("quiet".into()),
        };
        let launch = TdxLaunch::new([1; 48], [2; 48]).with_boot(&boot);
        let log = EventLog::parse(&launch.event_log).unwrap();
        assert_eq!(log, boot.event_log());
        assert_eq!(launch.rtmr, log.replay());
        assert_ne!(launch.rtmr[1], [0; 48]);
        assert_eq!(launch.rtmr[3], [0; 48]);
        // Another initrd: only RTMR2 moves.
        let other = TdxLaunch::new([1; 48], [2; 48]).with_boot(&TdvfBoot {
            initrd: Some([9; 48]),
            ..boot
        });
        assert_eq!(other.rtmr[..2], launch.rtmr[..2]);
        assert_ne!(other.rtmr[2], launch.rtmr[2]);
    }

    #[tokio::test]
    async fn serves_signed_reports_with_the_launchers_values() {
        bounded(async {
            let (mut guest, server) = start();
            let (id, info) = call(&mut guest, 1, &Request::Info).await;
            assert_eq!((id, info), (1, Response::Info { tee: SimTee::Snp }));
            let (id, resp) = call(&mut guest, 2, &snp_request(0x42)).await;
            assert_eq!(id, 2);
            check_report(resp, 0x42);
            // An SNP guest has no TDX event log.
            let (_, resp) = call(&mut guest, 3, &Request::TdxEventLog).await;
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::WrongTee,
                    ..
                }
            ));
            drop(guest);
            server.await.unwrap().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn garbage_gets_an_error_and_the_server_resynchronises() {
        bounded(async {
            let (mut guest, server) = start();
            guest
                .write_all(b"hello, this is not a frame")
                .await
                .unwrap();
            guest
                .write_all(&encode_request(9, &snp_request(1)))
                .await
                .unwrap();
            let (id, resp) = read_response(&mut guest).await;
            assert_eq!(id, 0);
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ));
            let (id, resp) = read_response(&mut guest).await;
            assert_eq!(id, 9);
            check_report(resp, 1);
            drop(guest);
            server.await.unwrap().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn oversized_and_malformed_requests_get_errors() {
        bounded(async {
            let (mut guest, server) = start();
            let mut huge = MAGIC.to_vec();
            huge.extend_from_slice(&u32::MAX.to_le_bytes());
            guest.write_all(&huge).await.unwrap();
            let (_, resp) = read_response(&mut guest).await;
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::Oversized,
                    ..
                }
            ));
            // A well-framed body of an unknown kind: the error is addressed to its id.
            let mut unknown = encode_request(77, &Request::Info);
            unknown[9] = 0x55;
            guest.write_all(&unknown).await.unwrap();
            let (id, resp) = read_response(&mut guest).await;
            assert_eq!(id, 77);
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ));
            // Out-of-range VMPL and the other TEE's request.
            let bad_vmpl = Request::SnpReport {
                report_data: ReportData([0; 64]),
                vmpl: 4,
            };
            let (_, resp) = call(&mut guest, 3, &bad_vmpl).await;
            assert!(matches!(resp, Response::Error { .. }));
            let tdx = Request::TdxQuote {
                report_data: ReportData([0; 64]),
            };
            let (_, resp) = call(&mut guest, 4, &tdx).await;
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::WrongTee,
                    ..
                }
            ));
            // Still serving.
            let (id, resp) = call(&mut guest, 5, &snp_request(5)).await;
            assert_eq!(id, 5);
            check_report(resp, 5);
            drop(guest);
            server.await.unwrap().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn serves_tdx_quotes_with_the_launchers_values() {
        bounded(async {
            let (mut guest, host) = tokio::io::duplex(256 * 1024);
            let boot = TdvfBoot {
                kernel_authenticode: [0x78; 48],
                kernel_len: 3,
                initrd: Some([0x9a; 48]),
                cmdline: Some("quiet".into()),
            };
            let launch = SimLaunch::Tdx {
                sim: crate::tdx::shared_test_tdx().clone(),
                launch: Box::new(TdxLaunch::new([0x12; 48], [0x34; 48]).with_boot(&boot)),
            };
            let server = tokio::spawn(serve(host, launch));
            let (_, info) = call(&mut guest, 1, &Request::Info).await;
            assert_eq!(info, Response::Info { tee: SimTee::Tdx });
            let req = Request::TdxQuote {
                report_data: ReportData([0x56; 64]),
            };
            let (id, resp) = call(&mut guest, 2, &req).await;
            assert_eq!(id, 2);
            let Response::TdxQuote { quote } = resp else {
                panic!("not a quote: {resp:?}")
            };
            let parsed = tsuba_protocols::evidence::TdxQuote::parse(&quote).unwrap();
            assert_eq!(parsed.body.mr_td, [0x12; 48]);
            assert_eq!(parsed.body.mr_config_id, [0x34; 48]);
            assert_eq!(parsed.body.report_data, [0x56; 64]);
            // The event log replays to the quote's RTMRs.
            let (_, resp) = call(&mut guest, 4, &Request::TdxEventLog).await;
            let Response::TdxEventLog { log } = resp else {
                panic!("not an event log: {resp:?}")
            };
            let log = tsuba_protocols::evidence::ccel::EventLog::parse(&log).unwrap();
            assert_eq!(log, boot.event_log());
            log.verify(&parsed.body.rtmr, 0..4).unwrap();
            assert_ne!(parsed.body.rtmr[2], [0; 48]);
            let (_, resp) = call(&mut guest, 3, &snp_request(0)).await;
            assert!(matches!(
                resp,
                Response::Error {
                    code: ErrorCode::WrongTee,
                    ..
                }
            ));
            drop(guest);
            server.await.unwrap().unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn a_half_frame_then_close_ends_cleanly() {
        bounded(async {
            let (mut guest, server) = start();
            let frame = encode_request(1, &snp_request(0));
            guest.write_all(&frame[..20]).await.unwrap();
            drop(guest);
            server.await.unwrap().unwrap();
        })
        .await;
    }
}

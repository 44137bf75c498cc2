//! The sim-device protocol: how a guest in sim mode asks the host's tee-sim for evidence over a
//! dedicated byte stream (the virtio-serial port `tsuba.teesim`).
//!
//! Every message is one frame:
//!
//! ```text
//! frame    := "TSIM" | body_len: u32 LE | body
//! body     := version: u8 (= 1) | kind: u8 | id: u32 LE | payload
//! ```
//!
//! The guest sends a request with an id of its choice; the reply carries the same id, so a
//! client that gave up on an earlier request can skip a late reply. The magic lets the server
//! find the next frame after garbage. Requests are tiny and bounded by [`MAX_REQUEST_LEN`];
//! replies by [`MAX_RESPONSE_LEN`]. The guest only ever supplies its 64 bytes of report data
//! (and, for SNP, the VMPL): everything else in the evidence comes from the launcher. A TDX guest
//! also asks for the CC event log that explains its quote's RTMRs (the launcher's, as a TD would
//! read the CCEL ACPI table).
//!
//! This module only encodes and decodes; the I/O is in tee-sim (server) and the attestation
//! agent (client).

use thiserror::Error;

use crate::evidence::wire::{Reader, Writer};
use crate::evidence::{REPORT_DATA_LEN, ReportData};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"TSIM";
/// Length of the frame header (magic and body length).
pub const HEADER_LEN: usize = 8;
/// Protocol version carried in every body.
pub const VERSION: u8 = 1;
/// Largest request body.
pub const MAX_REQUEST_LEN: usize = 256;
/// Largest response body: a quote or a report plus certificate table, each at most 64 KiB.
pub const MAX_RESPONSE_LEN: usize = 160 * 1024;
/// Longest error message in a reply: longer ones are cut when encoded and refused when decoded.
pub const MAX_ERROR_MESSAGE_LEN: usize = 256;
/// Largest evidence blob (report, certificate table or quote) in a reply.
pub const MAX_BLOB_LEN: usize = 64 * 1024;

const KIND_INFO: u8 = 0x01;
const KIND_SNP_REPORT: u8 = 0x02;
const KIND_TDX_QUOTE: u8 = 0x03;
const KIND_TDX_EVENT_LOG: u8 = 0x04;
const KIND_INFO_REPLY: u8 = 0x81;
const KIND_SNP_REPORT_REPLY: u8 = 0x82;
const KIND_TDX_QUOTE_REPLY: u8 = 0x83;
const KIND_TDX_EVENT_LOG_REPLY: u8 = 0x84;
const KIND_ERROR_REPLY: u8 = 0xFF;

/// Errors from decoding or encoding sim-device frames.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SimDevError {
    /// The frame does not start with [`MAGIC`].
    #[error("frame has a bad magic")]
    BadMagic,
    /// The body is longer than the limit for its direction.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Declared length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The body version is not [`VERSION`].
    #[error("unsupported sim-device protocol version {0}")]
    UnsupportedVersion(u8),
    /// The message kind is unknown for this direction.
    #[error("unknown message kind {0:#x}")]
    UnknownKind(u8),
    /// The body ended early or has bytes left over.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Which TEE the simulator plays for this guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTee {
    /// Simulated SEV-SNP.
    Snp,
    /// Simulated TDX.
    Tdx,
}

/// Error codes of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request could not be decoded.
    Malformed,
    /// The request was too large.
    Oversized,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// The request asks for evidence of the other TEE.
    WrongTee,
    /// The simulator failed to produce the evidence.
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    fn to_wire(self) -> u16 {
        match self {
            Self::Malformed => 1,
            Self::Oversized => 2,
            Self::UnsupportedVersion => 3,
            Self::WrongTee => 4,
            Self::Internal => 5,
            Self::Other(v) => v,
        }
    }

    fn from_wire(v: u16) -> Self {
        match v {
            1 => Self::Malformed,
            2 => Self::Oversized,
            3 => Self::UnsupportedVersion,
            4 => Self::WrongTee,
            5 => Self::Internal,
            other => Self::Other(other),
        }
    }
}

impl From<&SimDevError> for ErrorCode {
    fn from(e: &SimDevError) -> Self {
        match e {
            SimDevError::Oversized { .. } => Self::Oversized,
            SimDevError::UnsupportedVersion(_) => Self::UnsupportedVersion,
            SimDevError::BadMagic | SimDevError::UnknownKind(_) | SimDevError::Malformed(_) => {
                Self::Malformed
            }
        }
    }
}

/// A guest's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Which TEE is simulated.
    Info,
    /// An SNP attestation report with this report data, from this VMPL.
    SnpReport {
        /// The guest's 64 bytes.
        report_data: ReportData,
        /// Requested VMPL (0 to 3).
        vmpl: u32,
    },
    /// A TDX quote with this report data.
    TdxQuote {
        /// The guest's 64 bytes.
        report_data: ReportData,
    },
    /// The TD's CC event log.
    TdxEventLog,
}

/// The simulator's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The simulated TEE.
    Info {
        /// Which one.
        tee: SimTee,
    },
    /// A signed report and its certificate table.
    SnpReport {
        /// The 1184-byte report.
        report: Vec<u8>,
        /// The certificate table (SNP_GET_EXT_REPORT layout).
        cert_table: Vec<u8>,
    },
    /// A signed quote.
    TdxQuote {
        /// The quote.
        quote: Vec<u8>,
    },
    /// The CC event log (CCEL format; empty when the launch has none).
    TdxEventLog {
        /// The log.
        log: Vec<u8>,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A short lowercase description, never secret.
        message: String,
    },
}

/// Check a frame header and return the body length, bounded by `max`.
pub fn parse_header(header: &[u8; HEADER_LEN], max: usize) -> Result<usize, SimDevError> {
    let (magic, len) = header.split_at(4);
    if magic != MAGIC {
        return Err(SimDevError::BadMagic);
    }
    let len: [u8; 4] = len.try_into().map_err(|_| SimDevError::BadMagic)?;
    let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(SimDevError::Oversized { len, max });
    }
    Ok(len)
}

/// The id of a body, if it is long enough to have one (used to address an error reply).
pub fn body_id(body: &[u8]) -> Option<u32> {
    let mut r = Reader::new(body);
    r.skip(2)?;
    r.u32()
}

fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let body_len = 6usize.saturating_add(payload.len());
    let mut w = Writer::with_capacity(HEADER_LEN + body_len);
    // Payloads are bounded by the callers far below u32::MAX.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    w.bytes(&MAGIC)
        .u32(len)
        .bytes(&[VERSION, kind])
        .u32(id)
        .bytes(payload);
    w.into_vec()
}

fn open_body(body: &[u8]) -> Result<(u8, u32, Reader<'_>), SimDevError> {
    let mut r = Reader::new(body);
    let [version, kind] = r.array().ok_or(SimDevError::Malformed("short"))?;
    if version != VERSION {
        return Err(SimDevError::UnsupportedVersion(version));
    }
    let id = r.u32().ok_or(SimDevError::Malformed("short"))?;
    Ok((kind, id, r))
}

fn finish<T>(r: &Reader<'_>, what: &'static str, value: T) -> Result<T, SimDevError> {
    if r.remaining() != 0 {
        return Err(SimDevError::Malformed(what));
    }
    Ok(value)
}

fn blob(w: &mut Writer, bytes: &[u8]) -> Result<(), SimDevError> {
    if bytes.len() > MAX_BLOB_LEN {
        return Err(SimDevError::Oversized {
            len: bytes.len(),
            max: MAX_BLOB_LEN,
        });
    }
    let len = u32::try_from(bytes.len()).map_err(|_| SimDevError::Malformed("blob"))?;
    w.u32(len).bytes(bytes);
    Ok(())
}

fn read_blob(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, SimDevError> {
    let len = r.u32().ok_or(SimDevError::Malformed(what))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_BLOB_LEN {
        return Err(SimDevError::Oversized {
            len,
            max: MAX_BLOB_LEN,
        });
    }
    Ok(r.bytes(len).ok_or(SimDevError::Malformed(what))?.to_vec())
}

/// Encode a request as a whole frame.
pub fn encode_request(id: u32, req: &Request) -> Vec<u8> {
    match req {
        Request::Info => frame(KIND_INFO, id, &[]),
        Request::SnpReport { report_data, vmpl } => {
            let mut w = Writer::with_capacity(REPORT_DATA_LEN + 4);
            w.bytes(report_data.as_bytes()).u32(*vmpl);
            frame(KIND_SNP_REPORT, id, &w.into_vec())
        }
        Request::TdxQuote { report_data } => frame(KIND_TDX_QUOTE, id, report_data.as_bytes()),
        Request::TdxEventLog => frame(KIND_TDX_EVENT_LOG, id, &[]),
    }
}

/// Decode a request body (after [`parse_header`]).
pub fn decode_request(body: &[u8]) -> Result<(u32, Request), SimDevError> {
    if body.len() > MAX_REQUEST_LEN {
        return Err(SimDevError::Oversized {
            len: body.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    let (kind, id, mut r) = open_body(body)?;
    let req = match kind {
        KIND_INFO => Request::Info,
        KIND_SNP_REPORT => {
            let report_data = ReportData(r.array().ok_or(SimDevError::Malformed("snp request"))?);
            let vmpl = r.u32().ok_or(SimDevError::Malformed("snp request"))?;
            Request::SnpReport { report_data, vmpl }
        }
        KIND_TDX_QUOTE => Request::TdxQuote {
            report_data: ReportData(r.array().ok_or(SimDevError::Malformed("tdx request"))?),
        },
        KIND_TDX_EVENT_LOG => Request::TdxEventLog,
        other => return Err(SimDevError::UnknownKind(other)),
    };
    finish(&r, "request", (id, req))
}

/// Encode a response as a whole frame. Error messages longer than [`MAX_ERROR_MESSAGE_LEN`]
/// are cut at a character boundary.
pub fn encode_response(id: u32, resp: &Response) -> Result<Vec<u8>, SimDevError> {
    let mut w = Writer::with_capacity(256);
    let kind = match resp {
        Response::Info { tee } => {
            w.bytes(&[match tee {
                SimTee::Snp => 1,
                SimTee::Tdx => 2,
            }]);
            KIND_INFO_REPLY
        }
        Response::SnpReport { report, cert_table } => {
            blob(&mut w, report)?;
            blob(&mut w, cert_table)?;
            KIND_SNP_REPORT_REPLY
        }
        Response::TdxQuote { quote } => {
            blob(&mut w, quote)?;
            KIND_TDX_QUOTE_REPLY
        }
        Response::TdxEventLog { log } => {
            blob(&mut w, log)?;
            KIND_TDX_EVENT_LOG_REPLY
        }
        Response::Error { code, message } => {
            let mut end = message.len().min(MAX_ERROR_MESSAGE_LEN);
            while !message.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            let msg = message.get(..end).unwrap_or_default().as_bytes();
            let len = u16::try_from(msg.len()).unwrap_or(0);
            w.u16(code.to_wire()).u16(len).bytes(msg);
            KIND_ERROR_REPLY
        }
    };
    Ok(frame(kind, id, &w.into_vec()))
}

/// Decode a response body (after [`parse_header`]).
pub fn decode_response(body: &[u8]) -> Result<(u32, Response), SimDevError> {
    if body.len() > MAX_RESPONSE_LEN {
        return Err(SimDevError::Oversized {
            len: body.len(),
            max: MAX_RESPONSE_LEN,
        });
    }
    let (kind, id, mut r) = open_body(body)?;
    let resp = match kind {
        KIND_INFO_REPLY => {
            let [tee] = r.array().ok_or(SimDevError::Malformed("info reply"))?;
            let tee = match tee {
                1 => SimTee::Snp,
                2 => SimTee::Tdx,
                _ => return Err(SimDevError::Malformed("info reply")),
            };
            Response::Info { tee }
        }
        KIND_SNP_REPORT_REPLY => Response::SnpReport {
            report: read_blob(&mut r, "snp reply")?,
            cert_table: read_blob(&mut r, "snp reply")?,
        },
        KIND_TDX_QUOTE_REPLY => Response::TdxQuote {
            quote: read_blob(&mut r, "tdx reply")?,
        },
        KIND_TDX_EVENT_LOG_REPLY => Response::TdxEventLog {
            log: read_blob(&mut r, "tdx event log reply")?,
        },
        KIND_ERROR_REPLY => {
            let code = ErrorCode::from_wire(r.u16().ok_or(SimDevError::Malformed("error reply"))?);
            let len = usize::from(r.u16().ok_or(SimDevError::Malformed("error reply"))?);
            // The bound and the encoding the encoder keeps: a host cannot hand the guest a
            // longer message (it ends up in the guest's errors and logs), nor one that
            // changes on its way through `String::from_utf8_lossy`.
            if len > MAX_ERROR_MESSAGE_LEN {
                return Err(SimDevError::Oversized {
                    len,
                    max: MAX_ERROR_MESSAGE_LEN,
                });
            }
            let msg = r.bytes(len).ok_or(SimDevError::Malformed("error reply"))?;
            let message = std::str::from_utf8(msg)
                .map_err(|_| SimDevError::Malformed("error reply"))?
                .to_owned();
            Response::Error { code, message }
        }
        other => return Err(SimDevError::UnknownKind(other)),
    };
    finish(&r, "response", (id, resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(frame: &[u8], max: usize) -> &[u8] {
        let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
        let len = parse_header(&header, max).unwrap();
        assert_eq!(len, frame.len() - HEADER_LEN);
        &frame[HEADER_LEN..]
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Info,
            Request::SnpReport {
                report_data: ReportData([7; 64]),
                vmpl: 2,
            },
            Request::TdxQuote {
                report_data: ReportData([9; 64]),
            },
            Request::TdxEventLog,
        ];
        for (i, req) in reqs.iter().enumerate() {
            let id = 1000 + u32::try_from(i).unwrap();
            let frame = encode_request(id, req);
            let body = split(&frame, MAX_REQUEST_LEN);
            assert_eq!(body_id(body), Some(id));
            assert_eq!(decode_request(body).unwrap(), (id, req.clone()));
        }
    }

    #[test]
    fn responses_round_trip() {
        let resps = [
            Response::Info { tee: SimTee::Tdx },
            Response::SnpReport {
                report: vec![1; 1184],
                cert_table: vec![2; 3000],
            },
            Response::TdxQuote {
                quote: vec![3; 5000],
            },
            Response::TdxEventLog { log: vec![4; 1500] },
            Response::TdxEventLog { log: Vec::new() },
            Response::Error {
                code: ErrorCode::WrongTee,
                message: "wrong tee".into(),
            },
            Response::Error {
                code: ErrorCode::Other(77),
                message: String::new(),
            },
        ];
        for resp in resps {
            let frame = encode_response(5, &resp).unwrap();
            let body = split(&frame, MAX_RESPONSE_LEN);
            assert_eq!(decode_response(body).unwrap(), (5, resp));
        }
    }

    /// An error reply as a host could send it: code, declared length, message bytes.
    fn error_body(id: u32, message: &[u8]) -> Vec<u8> {
        let mut body = vec![VERSION, KIND_ERROR_REPLY];
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&4u16.to_le_bytes());
        body.extend_from_slice(&u16::try_from(message.len()).unwrap().to_le_bytes());
        body.extend_from_slice(message);
        body
    }

    // Found by the `simdev_frames` fuzz target (fuzz/regressions/simdev_frames/): the guest
    // accepted a 1,184-byte error message that the encoder never sends, and replaced bytes
    // that are not UTF-8, so a reply did not decode to what was sent.
    #[test]
    fn error_replies_over_the_message_bound_or_not_utf8_are_refused() {
        let body = error_body(4, &[b'A'; MAX_ERROR_MESSAGE_LEN + 1]);
        assert_eq!(
            decode_response(&body),
            Err(SimDevError::Oversized {
                len: MAX_ERROR_MESSAGE_LEN + 1,
                max: MAX_ERROR_MESSAGE_LEN
            })
        );
        assert_eq!(
            decode_response(&error_body(4, b"wrong \xff tee")),
            Err(SimDevError::Malformed("error reply"))
        );
        let at_bound = "A".repeat(MAX_ERROR_MESSAGE_LEN);
        assert_eq!(
            decode_response(&error_body(4, at_bound.as_bytes())),
            Ok((
                4,
                Response::Error {
                    code: ErrorCode::WrongTee,
                    message: at_bound
                }
            ))
        );
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(300);
        let frame = encode_response(
            1,
            &Response::Error {
                code: ErrorCode::Internal,
                message,
            },
        )
        .unwrap();
        let (_, resp) = decode_response(split(&frame, MAX_RESPONSE_LEN)).unwrap();
        let Response::Error { message, .. } = resp else {
            panic!("not an error")
        };
        assert_eq!(message, "é".repeat(MAX_ERROR_MESSAGE_LEN / 2));
    }

    #[test]
    fn headers_are_checked() {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"TSIX");
        assert_eq!(parse_header(&h, 100), Err(SimDevError::BadMagic));
        h[..4].copy_from_slice(&MAGIC);
        h[4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_header(&h, MAX_REQUEST_LEN),
            Err(SimDevError::Oversized {
                max: MAX_REQUEST_LEN,
                ..
            })
        ));
        h[4..].copy_from_slice(&256u32.to_le_bytes());
        assert_eq!(parse_header(&h, MAX_REQUEST_LEN), Ok(256));
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        let good = encode_request(
            3,
            &Request::SnpReport {
                report_data: ReportData([1; 64]),
                vmpl: 0,
            },
        );
        let body = &good[HEADER_LEN..];
        // Every truncation fails, none panics.
        for len in 0..body.len() {
            assert!(decode_request(&body[..len]).is_err(), "len {len}");
        }
        let mut long = body.to_vec();
        long.push(0);
        assert_eq!(
            decode_request(&long),
            Err(SimDevError::Malformed("request"))
        );
        let mut bad = body.to_vec();
        bad[0] = 2;
        assert_eq!(
            decode_request(&bad),
            Err(SimDevError::UnsupportedVersion(2))
        );
        let mut bad = body.to_vec();
        bad[1] = 0x82;
        assert_eq!(decode_request(&bad), Err(SimDevError::UnknownKind(0x82)));
        assert!(matches!(
            decode_request(&[0; MAX_REQUEST_LEN + 1]),
            Err(SimDevError::Oversized { .. })
        ));
        assert_eq!(
            ErrorCode::from(&SimDevError::UnknownKind(1)),
            ErrorCode::Malformed
        );
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = usize::try_from(next() % 200).unwrap();
            let mut body: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if let Some(v) = body.first_mut() {
                *v = VERSION;
            }
            let _ = decode_request(&body);
            let _ = decode_response(&body);
            let _ = body_id(&body);
        }
    }

    #[test]
    fn malformed_responses_are_typed_errors() {
        let good = encode_response(
            3,
            &Response::SnpReport {
                report: vec![1; 10],
                cert_table: vec![2; 10],
            },
        )
        .unwrap();
        let body = &good[HEADER_LEN..];
        for len in 0..body.len() {
            assert!(decode_response(&body[..len]).is_err(), "len {len}");
        }
        // A blob length beyond the limit is refused before any allocation.
        let mut bad = body.to_vec();
        bad[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_response(&bad),
            Err(SimDevError::Oversized { .. })
        ));
        assert!(matches!(
            encode_response(
                1,
                &Response::TdxQuote {
                    quote: vec![0; MAX_BLOB_LEN + 1]
                }
            ),
            Err(SimDevError::Oversized { .. })
        ));
        assert!(matches!(
            encode_response(
                1,
                &Response::TdxEventLog {
                    log: vec![0; MAX_BLOB_LEN + 1]
                }
            ),
            Err(SimDevError::Oversized { .. })
        ));
        // An event-log request carries no payload.
        let mut long = encode_request(3, &Request::TdxEventLog)[HEADER_LEN..].to_vec();
        long.push(0);
        assert!(matches!(
            decode_request(&long),
            Err(SimDevError::Malformed(_))
        ));
        let info = encode_response(1, &Response::Info { tee: SimTee::Snp }).unwrap();
        let mut bad = info[HEADER_LEN..].to_vec();
        bad[6] = 9;
        assert_eq!(
            decode_response(&bad),
            Err(SimDevError::Malformed("info reply"))
        );
    }
}

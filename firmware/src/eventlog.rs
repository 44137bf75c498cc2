//! TDX runtime measurements: replaying a confidential-computing event log (the CCEL) into RTMR
//! values, and checking that the boot components the verifier expects are in it.
//!
//! The log is in the TCG crypto-agile format: one legacy `TCG_PCR_EVENT` carrying the
//! "Spec ID Event03" header (which lists the digest algorithms and their sizes), then
//! `TCG_PCR_EVENT2` records (`u32` MR index, `u32` event type, `u32` digest count, each digest an
//! `u16` algorithm id and its bytes, `u32` data size, data). The MR index follows UEFI 2.10
//! section 38.4.1: 1 = RTMR0, 2 = RTMR1, 3 = RTMR2, 4 = RTMR3. Each RTMR starts at zero and is
//! extended as `RTMR = SHA-384(RTMR || digest)`; `EV_NO_ACTION` records are not extended. The log
//! area is padded after the last record (`0xff` by OVMF, zeros by td-shim).
//!
//! What a verifier can and cannot predict, and what depends on the QEMU version:
//! - RTMR0 holds the firmware's configuration: the TD HOB (memory size and layout), the ACPI
//!   tables QEMU generates (they change with the QEMU version, machine type, vCPU count and
//!   devices), the boot order from fw_cfg and the UEFI secure-boot variables. It is predictable
//!   only for a fixed QEMU version and command line; tsuba checks it by replay against the quote
//!   and by pinning a known value, not by computing it.
//! - RTMR1 holds the kernel, measured by OVMF as an `EV_EFI_BOOT_SERVICES_APPLICATION` with the
//!   PE Authenticode SHA-384 of the image it loaded. QEMU before 10.0 patched the bzImage setup
//!   header before handing the kernel to the firmware, so the digest is of the patched image;
//!   QEMU 10.0 and later pass the file unchanged.
//! - RTMR2 holds what the kernel's EFI stub measures: the initrd (`EV_EVENT_TAG`, SHA-384 of its
//!   bytes) and the command line (its load options).
//!
//! [`EventLog::verify`] replays and compares with the quote's RTMRs; [`EventLog::check_boot`]
//! checks that the expected kernel, initrd and command-line digests are in the RTMRs they belong
//! to. Together they bind the boot components to the quote.

use sha2::{Digest, Sha384};

/// The largest log accepted (real CCEL logs are tens of KiB).
pub const MAX_EVENT_LOG_LEN: usize = 16 * 1024 * 1024;
/// The most records accepted.
pub const MAX_EVENTS: usize = 8192;

const EV_NO_ACTION: u32 = 0x3;
const TPM_ALG_SHA384: u16 = 0x000c;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const MAX_ALGORITHMS: u32 = 16;

/// Errors from parsing, replaying or checking an event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// The log is larger than [`MAX_EVENT_LOG_LEN`].
    #[error("event log is {len} bytes, the limit is {MAX_EVENT_LOG_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A record runs past the end of the log.
    #[error("event log is truncated in the record at offset {offset:#x}")]
    Truncated {
        /// Offset of the record.
        offset: usize,
    },
    /// The first record is not a valid "Spec ID Event03" header.
    #[error("event log does not start with a spec id event")]
    BadHeader,
    /// The header does not list SHA-384, which TDX RTMRs use.
    #[error("event log has no sha-384 digests")]
    NoSha384,
    /// A record uses a digest algorithm the header did not list.
    #[error("event log record at offset {offset:#x} uses unlisted algorithm {alg:#06x}")]
    UnknownAlgorithm {
        /// Offset of the record.
        offset: usize,
        /// The algorithm id.
        alg: u16,
    },
    /// A record lacks a SHA-384 digest.
    #[error("event log record at offset {offset:#x} has no sha-384 digest")]
    MissingSha384 {
        /// Offset of the record.
        offset: usize,
    },
    /// A record names a measurement register other than RTMR0..3.
    #[error("event log record at offset {offset:#x} has measurement register index {index}")]
    BadMrIndex {
        /// Offset of the record.
        offset: usize,
        /// The index.
        index: u32,
    },
    /// The log has more than [`MAX_EVENTS`] records.
    #[error("event log has more than {MAX_EVENTS} records")]
    TooManyEvents,
    /// The replayed value of an RTMR differs from the quote's.
    #[error("replayed rtmr{0} does not match the quote")]
    RtmrMismatch(usize),
    /// An expected boot component is not in the log.
    #[error("the event log has no {what} event with the expected digest in rtmr{rtmr}")]
    MissingEvent {
        /// Which component.
        what: &'static str,
        /// The RTMR it belongs to.
        rtmr: usize,
    },
}

/// One measured record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcEvent {
    /// The RTMR it extends (0..=3).
    pub rtmr: usize,
    /// The TCG event type.
    pub event_type: u32,
    /// Its SHA-384 digest.
    pub digest: [u8; 48],
    /// The event data.
    pub data: Vec<u8>,
}

/// The four RTMR values.
pub type Rtmrs = [[u8; 48]; 4];

/// The digests of the boot components a verifier expects to find.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootDigests {
    /// Authenticode SHA-384 of the kernel image as the firmware loaded it (RTMR1).
    pub kernel: Option<[u8; 48]>,
    /// SHA-384 of the initrd (RTMR2).
    pub initrd: Option<[u8; 48]>,
    /// Digest of the command line as the EFI stub measured it (RTMR2).
    pub cmdline: Option<[u8; 48]>,
}

/// A parsed CC event log.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Vec<CcEvent>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    record: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EventLogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(EventLogError::Truncated {
                offset: self.record,
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, EventLogError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, EventLogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len(&mut self) -> Result<usize, EventLogError> {
        let n = self.u32()?;
        usize::try_from(n).map_err(|_| EventLogError::Truncated {
            offset: self.record,
        })
    }
}

impl EventLog {
    /// Parses a CCEL event log (trailing `0xff` padding allowed).
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        if bytes.len() > MAX_EVENT_LOG_LEN {
            return Err(EventLogError::TooLarge { len: bytes.len() });
        }
        let mut r = Reader {
            bytes,
            at: 0,
            record: 0,
        };
        let sizes = parse_header(&mut r)?;
        let mut events = Vec::new();
        loop {
            r.record = r.at;
            // The end of the log, or the padding after its last record: OVMF fills the log
            // area with 0xff, td-shim with zeros. No real record starts with eight such bytes
            // (MR index 0 is MRTD, which the log never extends).
            let rest = &bytes[r.at..];
            let head = &rest[..rest.len().min(8)];
            if head.iter().all(|&b| b == 0xff) || head.iter().all(|&b| b == 0) {
                break;
            }
            if events.len() >= MAX_EVENTS {
                return Err(EventLogError::TooManyEvents);
            }
            let index = r.u32()?;
            let event_type = r.u32()?;
            let count = r.u32()?;
            if count > MAX_ALGORITHMS {
                return Err(EventLogError::Truncated { offset: r.record });
            }
            let mut sha384 = None;
            for _ in 0..count {
                let alg = r.u16()?;
                let size = sizes
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, s)| usize::from(*s))
                    .ok_or(EventLogError::UnknownAlgorithm {
                        offset: r.record,
                        alg,
                    })?;
                let digest = r.take(size)?;
                if alg == TPM_ALG_SHA384 {
                    let mut d = [0u8; 48];
                    d.copy_from_slice(digest);
                    sha384 = Some(d);
                }
            }
            let data_len = r.len()?;
            let data = r.take(data_len)?.to_vec();
            if event_type == EV_NO_ACTION {
                continue;
            }
            let digest = sha384.ok_or(EventLogError::MissingSha384 { offset: r.record })?;
            let rtmr = match index {
                1..=4 => usize::try_from(index - 1).unwrap_or(0),
                _ => {
                    return Err(EventLogError::BadMrIndex {
                        offset: r.record,
                        index,
                    });
                }
            };
            events.push(CcEvent {
                rtmr,
                event_type,
                digest,
                data,
            });
        }
        Ok(Self { events })
    }

    /// The measured records, in log order.
    pub fn events(&self) -> &[CcEvent] {
        &self.events
    }

    /// The RTMR values the log produces.
    pub fn replay(&self) -> Rtmrs {
        let mut rtmrs = [[0u8; 48]; 4];
        for e in &self.events {
            let mut h = Sha384::new();
            h.update(rtmrs[e.rtmr]);
            h.update(e.digest);
            rtmrs[e.rtmr] = h.finalize().into();
        }
        rtmrs
    }

    /// Replays the log and compares each RTMR with the quote's.
    pub fn verify(&self, reported: &Rtmrs) -> Result<(), EventLogError> {
        let replayed = self.replay();
        match (0..4).find(|&i| replayed[i] != reported[i]) {
            Some(i) => Err(EventLogError::RtmrMismatch(i)),
            None => Ok(()),
        }
    }

    /// Checks that each expected boot component has an event in its RTMR.
    pub fn check_boot(&self, expected: &BootDigests) -> Result<(), EventLogError> {
        for (what, rtmr, digest) in [
            ("kernel", 1, expected.kernel),
            ("initrd", 2, expected.initrd),
            ("cmdline", 2, expected.cmdline),
        ] {
            let Some(digest) = digest else { continue };
            if !self
                .events
                .iter()
                .any(|e| e.rtmr == rtmr && e.digest == digest)
            {
                return Err(EventLogError::MissingEvent { what, rtmr });
            }
        }
        Ok(())
    }
}

/// Parses the legacy first record and returns the (algorithm, digest size) list it declares.
fn parse_header(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, EventLogError> {
    let _pcr = r.u32()?;
    let event_type = r.u32()?;
    let _sha1 = r.take(20)?;
    let size = r.len()?;
    let body = r.take(size)?;
    if event_type != EV_NO_ACTION || body.len() < 28 || &body[..16] != SPEC_ID_SIGNATURE {
        return Err(EventLogError::BadHeader);
    }
    let count = u32::from_le_bytes([body[24], body[25], body[26], body[27]]);
    if count == 0 || count > MAX_ALGORITHMS {
        return Err(EventLogError::BadHeader);
    }
    let list = body
        .get(28..28 + 4 * usize::try_from(count).unwrap_or(0))
        .ok_or(EventLogError::BadHeader)?;
    let sizes: Vec<(u16, u16)> = list
        .chunks_exact(4)
        .map(|c| {
            (
                u16::from_le_bytes([c[0], c[1]]),
                u16::from_le_bytes([c[2], c[3]]),
            )
        })
        .collect();
    if !sizes.contains(&(TPM_ALG_SHA384, 48)) {
        return Err(EventLogError::NoSha384);
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    const EV_EVENT_TAG: u32 = 0x6;

    /// The legacy header record declaring SHA-384 (and optionally SHA-256 as well).
    fn header(with_sha256: bool) -> Vec<u8> {
        let mut body = SPEC_ID_SIGNATURE.to_vec();
        body.extend_from_slice(&0u32.to_le_bytes()); // platform class
        body.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintn size
        let algs: &[(u16, u16)] = if with_sha256 {
            &[(0x000b, 32), (TPM_ALG_SHA384, 48)]
        } else {
            &[(TPM_ALG_SHA384, 48)]
        };
        body.extend_from_slice(&u32::try_from(algs.len()).unwrap().to_le_bytes());
        for (a, s) in algs {
            body.extend_from_slice(&a.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
        }
        body.push(0); // vendor info size
        let mut rec = 0u32.to_le_bytes().to_vec();
        rec.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        rec.extend_from_slice(&[0u8; 20]);
        rec.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    fn record(index: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut rec = index.to_le_bytes().to_vec();
        rec.extend_from_slice(&event_type.to_le_bytes());
        rec.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_le_bytes());
        for (alg, d) in digests {
            rec.extend_from_slice(&alg.to_le_bytes());
            rec.extend_from_slice(d);
        }
        rec.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        rec.extend_from_slice(data);
        rec
    }

    fn sha384(data: &[u8]) -> [u8; 48] {
        Sha384::digest(data).into()
    }

    fn event(index: u32, event_type: u32, data: &[u8]) -> Vec<u8> {
        record(
            index,
            event_type,
            &[(TPM_ALG_SHA384, sha384(data).to_vec())],
            data,
        )
    }

    /// A boot log: a firmware event in RTMR0, the kernel in RTMR1, initrd and cmdline in RTMR2,
    /// an EV_NO_ACTION that must not be extended, then 0xff padding.
    fn boot_log() -> Vec<u8> {
        let mut log = header(false);
        log.extend(event(1, 0x8000_000a, b"td hob"));
        log.extend(record(
            1,
            EV_NO_ACTION,
            &[(TPM_ALG_SHA384, vec![7; 48])],
            b"noop",
        ));
        log.extend(event(2, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel"));
        log.extend(event(3, EV_EVENT_TAG, b"initrd"));
        log.extend(event(3, EV_EVENT_TAG, b"cmdline"));
        log.extend(vec![0xff; 256]);
        log
    }

    fn extend(mr: [u8; 48], digest: [u8; 48]) -> [u8; 48] {
        let mut buf = mr.to_vec();
        buf.extend_from_slice(&digest);
        sha384(&buf)
    }

    #[test]
    fn replay_extends_each_rtmr_from_zero() {
        let log = EventLog::parse(&boot_log()).unwrap();
        assert_eq!(log.events().len(), 4);
        let r = log.replay();
        assert_eq!(r[0], extend([0; 48], sha384(b"td hob")));
        assert_eq!(r[1], extend([0; 48], sha384(b"kernel")));
        assert_eq!(
            r[2],
            extend(extend([0; 48], sha384(b"initrd")), sha384(b"cmdline"))
        );
        assert_eq!(r[3], [0u8; 48]);
        log.verify(&r).unwrap();
    }

    #[test]
    fn verify_refuses_a_quote_that_does_not_match() {
        let log = EventLog::parse(&boot_log()).unwrap();
        let mut r = log.replay();
        r[2][0] ^= 1;
        assert!(matches!(
            log.verify(&r),
            Err(EventLogError::RtmrMismatch(2))
        ));
    }

    #[test]
    fn check_boot_finds_components_in_their_rtmrs() {
        let log = EventLog::parse(&boot_log()).unwrap();
        let expected = BootDigests {
            kernel: Some(sha384(b"kernel")),
            initrd: Some(sha384(b"initrd")),
            cmdline: Some(sha384(b"cmdline")),
        };
        log.check_boot(&expected).unwrap();
        log.check_boot(&BootDigests::default()).unwrap();
        // A different initrd.
        let other = BootDigests {
            initrd: Some(sha384(b"evil initrd")),
            ..expected
        };
        assert!(matches!(
            log.check_boot(&other),
            Err(EventLogError::MissingEvent {
                what: "initrd",
                rtmr: 2
            })
        ));
        // The right digest in the wrong register does not count.
        let misplaced = BootDigests {
            kernel: Some(sha384(b"initrd")),
            ..BootDigests::default()
        };
        assert!(matches!(
            log.check_boot(&misplaced),
            Err(EventLogError::MissingEvent { what: "kernel", .. })
        ));
    }

    #[test]
    fn multi_algorithm_records_use_their_sha384_digest() {
        let mut log = header(true);
        log.extend(record(
            2,
            EV_EVENT_TAG,
            &[
                (0x000b, vec![1; 32]),
                (TPM_ALG_SHA384, sha384(b"x").to_vec()),
            ],
            b"x",
        ));
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.events()[0].digest, sha384(b"x"));
        assert_eq!(parsed.events()[0].rtmr, 1);
    }

    #[test]
    fn refuses_malformed_logs() {
        // Truncated anywhere inside a record.
        let full = boot_log();
        let end_of_records = full.len() - 256;
        for cut in [
            10,
            40,
            end_of_records - 1,
            end_of_records - 30,
            end_of_records - 70,
        ] {
            assert!(
                matches!(
                    EventLog::parse(&full[..cut]),
                    Err(EventLogError::Truncated { .. } | EventLogError::BadHeader)
                ),
                "cut at {cut}"
            );
        }
        // Not a spec id header.
        let mut bad = boot_log();
        bad[32] = b'X';
        assert!(matches!(
            EventLog::parse(&bad),
            Err(EventLogError::BadHeader)
        ));
        // A header without SHA-384.
        let mut no384 = header(false);
        let at = no384.len() - 5;
        no384[at..at + 2].copy_from_slice(&0x000bu16.to_le_bytes());
        no384[at + 2..at + 4].copy_from_slice(&32u16.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&no384),
            Err(EventLogError::NoSha384)
        ));
        // Unlisted algorithm, missing sha-384, bad register index.
        let mut log = header(false);
        log.extend(record(1, EV_EVENT_TAG, &[(0x0004, vec![0; 20])], b""));
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::UnknownAlgorithm { alg: 4, .. })
        ));
        let mut log = header(true);
        log.extend(record(1, EV_EVENT_TAG, &[(0x000b, vec![0; 32])], b""));
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::MissingSha384 { .. })
        ));
        for index in [0, 5, 0xffff_fffe] {
            let mut log = header(false);
            log.extend(event(index, EV_EVENT_TAG, b"x"));
            assert!(
                matches!(EventLog::parse(&log), Err(EventLogError::BadMrIndex { .. })),
                "{index}"
            );
        }
        // A data length that runs past the end.
        let mut log = header(false);
        let mut rec = event(1, EV_EVENT_TAG, b"abc");
        let len_at = rec.len() - 7;
        rec[len_at..len_at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        log.extend(rec);
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::Truncated { .. })
        ));
    }

    #[test]
    fn bounds_size_and_record_count() {
        assert!(matches!(
            EventLog::parse(&vec![0u8; MAX_EVENT_LOG_LEN + 1]),
            Err(EventLogError::TooLarge { .. })
        ));
        let mut log = header(false);
        let one = event(1, EV_EVENT_TAG, b"");
        for _ in 0..=MAX_EVENTS {
            log.extend_from_slice(&one);
        }
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::TooManyEvents)
        ));
    }
}

//! The TDX confidential-computing event log (CCEL): parsing it, replaying it into RTMR values,
//! reading the boot components out of it, and writing one (tee-sim, `tsuba measure`).
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
//!   only for a fixed QEMU version and command line: on hardware, pin it from a known-good quote.
//!   tee-sim's TDVF model ([`TdvfBoot`]) puts a single `EV_SEPARATOR` there.
//! - RTMR1 holds the kernel, measured by OVMF as an `EV_EFI_BOOT_SERVICES_APPLICATION` with the
//!   PE Authenticode SHA-384 of the image it loaded, then the boot manager's `EV_EFI_ACTION`
//!   strings ("Calling EFI Application from Boot Option", and the two exit-boot-services ones).
//!   QEMU before 10.0 patched the bzImage setup header before handing the kernel to the
//!   firmware, so the digest is of the patched image; QEMU 10.0 and later pass the file unchanged.
//! - RTMR2 holds what the kernel's EFI stub measures as `EV_EVENT_TAG` records: first the load
//!   options (tag `0x8F3B22ED`, digest over the UTF-16LE command line the firmware passed, NUL
//!   included; OVMF appends ` initrd=initrd` when QEMU has an initrd), then the initrd (tag
//!   `0x8F3B22EC`, SHA-384 of its bytes).
//!
//! The order of events per register is the one an OVMF direct boot logs (Trustee's
//! `CCEL_data_ovmf` fixture has exactly this shape).
//!
//! [`EventLog::verify`] replays and compares with the quote's RTMRs; [`EventLog::boot_components`]
//! reads the kernel, initrd and command-line digests out of their events. Only the replay binds
//! the log to the quote: the event data (tags, names) is not covered by any digest, so a verifier
//! must compare whole RTMR values with reference values, and use the component digests to say
//! which component differs.

use sha2::{Digest, Sha384};

/// The largest log accepted (real CCEL logs are tens of KiB).
pub const MAX_EVENT_LOG_LEN: usize = 16 * 1024 * 1024;
/// The most records accepted.
pub const MAX_EVENTS: usize = 8192;

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x4;
/// `EV_EVENT_TAG`: a tagged event (`u32` tag id, `u32` size, data), as the Linux EFI stub logs.
pub const EV_EVENT_TAG: u32 = 0x6;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a UEFI application image (the kernel, in a direct boot).
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_ACTION`: an action string.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// The Linux EFI stub's tag id for the initrd it loaded.
pub const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;
/// The Linux EFI stub's tag id for its load options (the command line).
pub const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;
const TPM_ALG_SHA384: u16 = 0x000c;
/// The UEFI boot manager's action strings measured into RTMR1 around the kernel's start.
const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
const EXIT_BOOT_SERVICES: &str = "Exit Boot Services Invocation";
const EXIT_BOOT_SERVICES_OK: &str = "Exit Boot Services Returned with Success";
/// QEMU's kernel-loader file system device path for the kernel file (vendor media node with
/// OVMF's QemuKernelLoaderFs GUID, file path `kernel`), the data of the kernel's event.
const KERNEL_DEVICE_PATH: [u8; 42] = [
    0x04, 0x03, 0x14, 0x00, 0x72, 0xf7, 0x28, 0x14, 0x4a, 0xb6, 0x1e, 0x44, 0xb8, 0xc3, 0x9e, 0xbd,
    0xd7, 0xf8, 0x93, 0xc7, 0x04, 0x04, 0x12, 0x00, b'k', 0, b'e', 0, b'r', 0, b'n', 0, b'e', 0,
    b'l', 0, 0, 0, 0x7f, 0xff, 0x04, 0x00,
];
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

/// The digests of the boot components, as their events in the log name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootComponents {
    /// The first `EV_EFI_BOOT_SERVICES_APPLICATION` in RTMR1: the kernel's Authenticode SHA-384.
    pub kernel: Option<[u8; 48]>,
    /// The `EV_EVENT_TAG` with the Linux initrd tag in RTMR2: SHA-384 of the initrd.
    pub initrd: Option<[u8; 48]>,
    /// The `EV_EVENT_TAG` with the Linux load-options tag in RTMR2: the command line's digest.
    pub cmdline: Option<[u8; 48]>,
}

/// The RTMRs a boot log accounts for: RTMR0 (firmware), RTMR1 (kernel), RTMR2 (initrd and
/// command line). RTMR3 is extended at run time by the guest's attestation agent, whose events
/// are not in the firmware's log.
pub const BOOT_RTMRS: std::ops::Range<usize> = 0..3;

/// A parsed CC event log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// Replays the log and compares the RTMRs in `registers` with the quote's; the first that
    /// differs is named in the error.
    pub fn verify(
        &self,
        reported: &Rtmrs,
        registers: std::ops::Range<usize>,
    ) -> Result<(), EventLogError> {
        let replayed = self.replay();
        match registers
            .filter(|&i| i < 4)
            .find(|&i| replayed[i] != reported[i])
        {
            Some(i) => Err(EventLogError::RtmrMismatch(i)),
            None => Ok(()),
        }
    }

    /// The boot components' digests, read from their events (see [`BootComponents`]).
    pub fn boot_components(&self) -> BootComponents {
        let tagged = |tag: u32| {
            self.events
                .iter()
                .find(|e| {
                    e.rtmr == 2
                        && e.event_type == EV_EVENT_TAG
                        && e.data.get(..4) == Some(&tag.to_le_bytes()[..])
                })
                .map(|e| e.digest)
        };
        BootComponents {
            kernel: self
                .events
                .iter()
                .find(|e| e.rtmr == 1 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
                .map(|e| e.digest),
            initrd: tagged(LINUX_INITRD_TAG),
            cmdline: tagged(LINUX_LOAD_OPTIONS_TAG),
        }
    }

    /// A log of these events.
    pub fn from_events(events: Vec<CcEvent>) -> Self {
        Self { events }
    }

    /// The log in the CCEL format: a spec id header declaring SHA-384 only, then one
    /// `TCG_PCR_EVENT2` per event.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = SPEC_ID_SIGNATURE.to_vec();
        body.extend_from_slice(&0u32.to_le_bytes()); // platform class
        body.extend_from_slice(&[0, 2, 0, 2]); // spec version 2.0, errata 0, UINTN of 8 bytes
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
        body.extend_from_slice(&48u16.to_le_bytes());
        body.push(0); // no vendor info
        let mut out = 0u32.to_le_bytes().to_vec();
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&len_u32(body.len()).to_le_bytes());
        out.extend_from_slice(&body);
        for e in &self.events {
            out.extend_from_slice(&len_u32(e.rtmr + 1).to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
            out.extend_from_slice(&e.digest);
            out.extend_from_slice(&len_u32(e.data.len()).to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }
}

/// A length that fits a `u32` field: every length written here is bounded far below that (event
/// data, RTMR indexes), so saturation never happens.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The TCG name of an event type, `"UNKNOWN"` for others.
pub fn event_type_name(event_type: u32) -> &'static str {
    match event_type {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xa => "EV_PLATFORM_CONFIG_FLAGS",
        0xb => "EV_TABLE_OF_DEVICES",
        0xc => "EV_COMPACT_HASH",
        0xd => "EV_IPL",
        0xe => "EV_IPL_PARTITION_DATA",
        0xf => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => "UNKNOWN",
    }
}

/// The events of an OVMF (TDVF) direct boot of a Linux kernel with its EFI stub, as tee-sim
/// simulates them and `tsuba measure` predicts them (see the module documentation for the
/// per-register layout and what real firmware adds to RTMR0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdvfBoot {
    /// PE Authenticode SHA-384 of the kernel image.
    pub kernel_authenticode: [u8; 48],
    /// The kernel file's length (recorded in its event's data, not measured).
    pub kernel_len: u64,
    /// SHA-384 of the initrd, when there is one.
    pub initrd: Option<[u8; 48]>,
    /// The kernel command line QEMU passes (`-append`), when there is one.
    pub cmdline: Option<String>,
}

impl TdvfBoot {
    /// The load options OVMF gives the kernel: the command line, then ` initrd=initrd` when
    /// QEMU has an initrd, as UTF-16LE with its NUL; empty when there is neither.
    pub fn load_options(&self) -> Vec<u8> {
        let mut text = self.cmdline.clone().unwrap_or_default();
        if self.initrd.is_some() {
            text.push_str(" initrd=initrd");
        }
        if text.is_empty() {
            return Vec::new();
        }
        text.encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// The event log of this boot, in log order.
    pub fn event_log(&self) -> EventLog {
        let action = |text: &str| CcEvent {
            rtmr: 1,
            event_type: EV_EFI_ACTION,
            digest: Sha384::digest(text.as_bytes()).into(),
            data: text.as_bytes().to_vec(),
        };
        let tag = |id: u32, name: &[u8], digest: [u8; 48]| {
            let mut data = id.to_le_bytes().to_vec();
            data.extend_from_slice(&len_u32(name.len()).to_le_bytes());
            data.extend_from_slice(name);
            CcEvent {
                rtmr: 2,
                event_type: EV_EVENT_TAG,
                digest,
                data,
            }
        };
        // UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path length, path.
        let mut image = 0u64.to_le_bytes().to_vec();
        image.extend_from_slice(&self.kernel_len.to_le_bytes());
        image.extend_from_slice(&0u64.to_le_bytes());
        image.extend_from_slice(&u64::from(len_u32(KERNEL_DEVICE_PATH.len())).to_le_bytes());
        image.extend_from_slice(&KERNEL_DEVICE_PATH);
        let mut events = vec![
            CcEvent {
                rtmr: 0,
                event_type: EV_SEPARATOR,
                digest: Sha384::digest([0u8; 4]).into(),
                data: vec![0; 4],
            },
            CcEvent {
                rtmr: 1,
                event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
                digest: self.kernel_authenticode,
                data: image,
            },
            action(CALLING_EFI_APPLICATION),
        ];
        let options = self.load_options();
        if !options.is_empty() {
            events.push(tag(
                LINUX_LOAD_OPTIONS_TAG,
                b"LOADED_IMAGE::LoadOptions\0",
                Sha384::digest(&options).into(),
            ));
        }
        if let Some(initrd) = self.initrd {
            events.push(tag(LINUX_INITRD_TAG, b"Linux initrd\0", initrd));
        }
        events.push(action(EXIT_BOOT_SERVICES));
        events.push(action(EXIT_BOOT_SERVICES_OK));
        EventLog { events }
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
        log.verify(&r, 0..4).unwrap();
    }

    #[test]
    fn verify_refuses_a_quote_that_does_not_match() {
        let log = EventLog::parse(&boot_log()).unwrap();
        let mut r = log.replay();
        r[2][0] ^= 1;
        assert!(matches!(
            log.verify(&r, 0..4),
            Err(EventLogError::RtmrMismatch(2))
        ));
        // RTMR3 differs: only checked when asked for.
        let mut r = log.replay();
        r[3][0] ^= 1;
        log.verify(&r, BOOT_RTMRS).unwrap();
        assert!(matches!(
            log.verify(&r, 0..4),
            Err(EventLogError::RtmrMismatch(3))
        ));
    }

    fn tagged(tag: u32, name: &[u8], content: &[u8]) -> Vec<u8> {
        let mut data = tag.to_le_bytes().to_vec();
        data.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
        data.extend_from_slice(name);
        record(
            3,
            EV_EVENT_TAG,
            &[(TPM_ALG_SHA384, sha384(content).to_vec())],
            &data,
        )
    }

    #[test]
    fn boot_components_come_from_their_events_and_registers() {
        let mut log = header(false);
        log.extend(event(2, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel"));
        log.extend(tagged(LINUX_LOAD_OPTIONS_TAG, b"opts\0", b"cmdline"));
        log.extend(tagged(LINUX_INITRD_TAG, b"initrd\0", b"initrd"));
        // An application in RTMR2 and an untagged event are nobody's kernel or initrd.
        log.extend(event(3, EV_EFI_BOOT_SERVICES_APPLICATION, b"other"));
        log.extend(event(3, EV_EVENT_TAG, b"x"));
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(
            parsed.boot_components(),
            BootComponents {
                kernel: Some(sha384(b"kernel")),
                initrd: Some(sha384(b"initrd")),
                cmdline: Some(sha384(b"cmdline")),
            }
        );
        // The kernel measured into the wrong register does not count.
        let mut misplaced = header(false);
        misplaced.extend(event(3, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel"));
        assert_eq!(
            EventLog::parse(&misplaced).unwrap().boot_components(),
            BootComponents::default()
        );
    }

    #[test]
    fn tdvf_boot_log_round_trips_and_has_the_ovmf_shape() {
        let boot = TdvfBoot {
            kernel_authenticode: sha384(b"kernel"),
            kernel_len: 1234,
            initrd: Some(sha384(b"initrd")),
            cmdline: Some("console=hvc0".into()),
        };
        let log = boot.event_log();
        let parsed = EventLog::parse(&log.to_bytes()).unwrap();
        assert_eq!(parsed, log);
        let types: Vec<(usize, &str)> = parsed
            .events()
            .iter()
            .map(|e| (e.rtmr, event_type_name(e.event_type)))
            .collect();
        assert_eq!(
            types,
            [
                (0, "EV_SEPARATOR"),
                (1, "EV_EFI_BOOT_SERVICES_APPLICATION"),
                (1, "EV_EFI_ACTION"),
                (2, "EV_EVENT_TAG"),
                (2, "EV_EVENT_TAG"),
                (1, "EV_EFI_ACTION"),
                (1, "EV_EFI_ACTION"),
            ]
        );
        // The load options are the UTF-16LE command line with OVMF's initrd argument and a NUL.
        let options: Vec<u8> = "console=hvc0 initrd=initrd\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(boot.load_options(), options);
        assert_eq!(
            parsed.boot_components(),
            BootComponents {
                kernel: Some(sha384(b"kernel")),
                initrd: Some(sha384(b"initrd")),
                cmdline: Some(sha384(&options)),
            }
        );
        // The RTMRs, extended by hand from the event digests.
        let r = parsed.replay();
        assert_eq!(r[0], extend([0; 48], sha384(&[0; 4])));
        let mut rtmr1 = extend([0; 48], sha384(b"kernel"));
        for text in [
            "Calling EFI Application from Boot Option",
            "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Success",
        ] {
            rtmr1 = extend(rtmr1, sha384(text.as_bytes()));
        }
        assert_eq!(r[1], rtmr1);
        assert_eq!(
            r[2],
            extend(extend([0; 48], sha384(&options)), sha384(b"initrd"))
        );
        assert_eq!(r[3], [0; 48]);
        // Without an initrd or command line, RTMR2 stays zero.
        let bare = TdvfBoot {
            initrd: None,
            cmdline: None,
            ..boot
        };
        assert!(bare.load_options().is_empty());
        assert_eq!(bare.event_log().replay()[2], [0; 48]);
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

//! What the SNP verifier requires of an authentic report before it trusts it: a platform TCB at
//! or above the broker's minimum for the report's product, a guest policy that forbids a
//! migration agent, and no certificate of the chain on a revocation list AMD signed.
//!
//! The product (Milan, Genoa, Turin) is the one whose ARK the chain ends at, so a report cannot
//! pick a lower floor by claiming another product. A broker with no minimum for a product
//! refuses that product's reports unless it was started with the insecure "any TCB" option.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier as _;
use tsuba_protocols::evidence::TcbParts;
use x509_cert::der::{Decode, Encode};

/// Largest revocation list accepted (bytes, DER).
const MAX_CRL_LEN: usize = 1024 * 1024;
/// Most revoked entries kept from all lists together.
const MAX_REVOKED: usize = 100_000;

/// An AMD EPYC generation with its own SNP root of trust and its own TCB numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnpProduct {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl SnpProduct {
    /// The lowercase name used on the command line and in claims.
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "milan",
            Self::Genoa => "genoa",
            Self::Turin => "turin",
        }
    }

    /// The product an ARK certificate is for: its common name ends in `ARK-<Product>` (AMD's
    /// `ARK-Milan`, tee-sim's `SIMULATED ARK-Genoa`).
    pub(crate) fn of_ark(ark: &x509_cert::Certificate) -> Option<Self> {
        let subject = ark.tbs_certificate.subject.to_string();
        let cn = subject
            .split(',')
            .find_map(|part| part.trim().strip_prefix("CN="))?;
        [Self::Milan, Self::Genoa, Self::Turin]
            .into_iter()
            .find(|product| {
                cn.to_ascii_lowercase()
                    .ends_with(&format!("ark-{}", product.name()))
            })
    }
}

impl std::fmt::Display for SnpProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--snp-min-tcb` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnpMinTcbError {
    /// The text is not `<product>=<component>:<svn>,...`.
    #[error(
        "snp minimum tcb must be <product>=bootloader:N,tee:N,snp:N,microcode:N[,fmc:N], not {0:?}"
    )]
    Syntax(String),
    /// The product is not milan, genoa or turin.
    #[error("snp product must be milan, genoa or turin, not {0:?}")]
    Product(String),
    /// A component name is unknown or given twice.
    #[error("snp tcb component {0:?} is unknown or repeated")]
    Component(String),
    /// A component value is not 0 to 255.
    #[error("snp tcb component {0} must be a number from 0 to 255")]
    Value(&'static str),
    /// A required component is missing.
    #[error("snp minimum tcb for {product} lacks {component}")]
    Missing {
        /// The product.
        product: SnpProduct,
        /// The missing component.
        component: &'static str,
    },
    /// `fmc` was given for a product without an FMC (only Turin has one).
    #[error("snp tcb component fmc exists on turin only, not {0}")]
    Fmc(SnpProduct),
}

impl FromStr for SnpProduct {
    type Err = SnpMinTcbError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "milan" => Ok(Self::Milan),
            "genoa" => Ok(Self::Genoa),
            "turin" => Ok(Self::Turin),
            _ => Err(SnpMinTcbError::Product(text.into())),
        }
    }
}

/// Parses `<product>=bootloader:N,tee:N,snp:N,microcode:N[,fmc:N]` (all four SVNs required;
/// `fmc` on Turin only), the syntax of `tsuba kbs serve --snp-min-tcb`.
pub fn parse_snp_min_tcb(text: &str) -> Result<(SnpProduct, TcbParts), SnpMinTcbError> {
    let (product, components) = text
        .split_once('=')
        .ok_or_else(|| SnpMinTcbError::Syntax(text.into()))?;
    let product: SnpProduct = product.trim().parse()?;
    let mut values: BTreeMap<&'static str, u8> = BTreeMap::new();
    for part in components.split(',') {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| SnpMinTcbError::Syntax(text.into()))?;
        let name = ["bootloader", "tee", "snp", "microcode", "fmc"]
            .into_iter()
            .find(|known| *known == name.trim())
            .ok_or_else(|| SnpMinTcbError::Component(name.into()))?;
        let value = value
            .trim()
            .parse::<u8>()
            .map_err(|_| SnpMinTcbError::Value(name))?;
        if values.insert(name, value).is_some() {
            return Err(SnpMinTcbError::Component(name.into()));
        }
    }
    let get = |component: &'static str| {
        values
            .get(component)
            .copied()
            .ok_or(SnpMinTcbError::Missing { product, component })
    };
    let fmc = values.get("fmc").copied();
    if fmc.is_some() && product != SnpProduct::Turin {
        return Err(SnpMinTcbError::Fmc(product));
    }
    Ok((
        product,
        TcbParts {
            fmc,
            bootloader: get("bootloader")?,
            tee: get("tee")?,
            snp: get("snp")?,
            microcode: get("microcode")?,
        },
    ))
}

/// Why an authentic SNP report is not trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnpRefusal {
    /// No minimum TCB is configured for the report's product.
    #[error(
        "no minimum tcb is configured for {product}: start the broker with --snp-min-tcb \
         {product}=bootloader:N,tee:N,snp:N,microcode:N (or, never in production, \
         --insecure-snp-accept-any-tcb)"
    )]
    NoMinimumTcb {
        /// The product the report's chain ends at.
        product: SnpProduct,
    },
    /// A component of the reported TCB is below the configured minimum.
    #[error("{product} reported tcb {component} svn {reported} is below the minimum {minimum}")]
    TcbBelowMinimum {
        /// The product.
        product: SnpProduct,
        /// `bootloader`, `tee`, `snp`, `microcode` or `fmc`.
        component: &'static str,
        /// The report's value.
        reported: u8,
        /// The configured minimum.
        minimum: u8,
    },
    /// The guest policy lets a migration agent read the guest (MIGRATE_MA).
    #[error("guest policy allows a migration agent (MIGRATE_MA, bit 18)")]
    MigrationAgentAllowed,
    /// A certificate of the chain is on a revocation list.
    #[error("{what} certificate with serial {serial} is revoked by amd's revocation list")]
    Revoked {
        /// Which certificate.
        what: &'static str,
        /// Its serial number, hex.
        serial: String,
    },
}

/// The TCB a report must have.
#[derive(Debug, Clone, Default)]
pub(crate) enum TcbRequirement {
    /// Nothing configured yet: every report is refused.
    #[default]
    Unset,
    /// At least these SVNs, per product; a product without an entry is refused.
    Minimum(BTreeMap<SnpProduct, TcbParts>),
    /// Any TCB (insecure: firmware with known flaws passes).
    InsecureAny,
}

impl TcbRequirement {
    /// Adds a minimum for `product` (replacing the insecure "any").
    pub(crate) fn with(self, product: SnpProduct, min: TcbParts) -> Self {
        let mut map = match self {
            Self::Minimum(map) => map,
            Self::Unset | Self::InsecureAny => BTreeMap::new(),
        };
        map.insert(product, min);
        Self::Minimum(map)
    }

    /// Checks `tcb`, the report's reported TCB, for `product`.
    pub(crate) fn check(&self, product: SnpProduct, tcb: TcbParts) -> Result<(), SnpRefusal> {
        let min = match self {
            Self::InsecureAny => return Ok(()),
            Self::Unset => return Err(SnpRefusal::NoMinimumTcb { product }),
            Self::Minimum(map) => map
                .get(&product)
                .ok_or(SnpRefusal::NoMinimumTcb { product })?,
        };
        let mut pairs = vec![
            ("bootloader", tcb.bootloader, min.bootloader),
            ("tee", tcb.tee, min.tee),
            ("snp", tcb.snp, min.snp),
            ("microcode", tcb.microcode, min.microcode),
        ];
        if let Some(minimum) = min.fmc {
            // A Turin floor with an FMC: a report without one (legacy layout) has FMC 0.
            pairs.insert(0, ("fmc", tcb.fmc.unwrap_or(0), minimum));
        }
        for (component, reported, minimum) in pairs {
            if reported < minimum {
                return Err(SnpRefusal::TcbBelowMinimum {
                    product,
                    component,
                    reported,
                    minimum,
                });
            }
        }
        Ok(())
    }
}

/// Errors while loading a revocation list.
#[derive(Debug, thiserror::Error)]
pub enum SnpCrlError {
    /// Neither PEM with an `X509 CRL` block nor DER of a CRL.
    #[error("snp revocation list is neither a pem nor a der crl")]
    Format,
    /// Larger than the limit.
    #[error("snp revocation list is larger than {MAX_CRL_LEN} bytes")]
    TooLarge,
    /// No trusted ARK or ASK has the CRL's issuer name and signed it.
    #[error(
        "snp revocation list is not signed by a trusted amd root (ark or ask of milan, genoa, turin)"
    )]
    NotSignedByRoot,
    /// More revoked entries than the limit.
    #[error("snp revocation lists hold more than {MAX_REVOKED} entries")]
    TooManyEntries,
}

/// Revoked certificates, as (issuer name DER, serial number bytes).
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl Revocations {
    /// Adds the entries of `crl` (PEM or DER) after checking its signature by one of
    /// `signers` (certificates of trusted ARKs and ASKs).
    pub(crate) fn add(
        &mut self,
        crl: &[u8],
        signers: &[&x509_cert::Certificate],
    ) -> Result<usize, SnpCrlError> {
        if crl.len() > MAX_CRL_LEN {
            return Err(SnpCrlError::TooLarge);
        }
        let der = match rustls_pemfile::crls(&mut &crl[..]).next() {
            Some(Ok(der)) => der.as_ref().to_vec(),
            Some(Err(_)) => return Err(SnpCrlError::Format),
            None => crl.to_vec(),
        };
        let list =
            x509_cert::crl::CertificateList::from_der(&der).map_err(|_| SnpCrlError::Format)?;
        let tbs = list
            .tbs_cert_list
            .to_der()
            .map_err(|_| SnpCrlError::Format)?;
        let signature = list
            .signature
            .as_bytes()
            .ok_or(SnpCrlError::NotSignedByRoot)?;
        let signed = signers.iter().any(|signer| {
            signer.tbs_certificate.subject == list.tbs_cert_list.issuer
                && rsa_pss_sha384_verifies(signer, &tbs, signature)
        });
        if !signed {
            return Err(SnpCrlError::NotSignedByRoot);
        }
        let issuer = list
            .tbs_cert_list
            .issuer
            .to_der()
            .map_err(|_| SnpCrlError::Format)?;
        let entries = list.tbs_cert_list.revoked_certificates.unwrap_or_default();
        if self.revoked.len().saturating_add(entries.len()) > MAX_REVOKED {
            return Err(SnpCrlError::TooManyEntries);
        }
        let count = entries.len();
        for entry in entries {
            self.revoked
                .insert((issuer.clone(), entry.serial_number.as_bytes().to_vec()));
        }
        Ok(count)
    }

    /// Refuses `cert` if a loaded list from its issuer names its serial.
    pub(crate) fn check(
        &self,
        cert: &x509_cert::Certificate,
        what: &'static str,
    ) -> Result<(), SnpRefusal> {
        if self.revoked.is_empty() {
            return Ok(());
        }
        let Ok(issuer) = cert.tbs_certificate.issuer.to_der() else {
            return Ok(());
        };
        let serial = cert.tbs_certificate.serial_number.as_bytes().to_vec();
        if self.revoked.contains(&(issuer, serial)) {
            return Err(SnpRefusal::Revoked {
                what,
                serial: hex::encode(cert.tbs_certificate.serial_number.as_bytes()),
            });
        }
        Ok(())
    }
}

/// Whether `signature` over `message` verifies under `signer`'s RSA key with RSASSA-PSS,
/// SHA-384 and a 48-byte salt (how AMD's ARK signs).
fn rsa_pss_sha384_verifies(
    signer: &x509_cert::Certificate,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let Some(key) = spki
        .subject_public_key
        .as_bytes()
        .and_then(|bytes| rsa::RsaPublicKey::from_pkcs1_der(bytes).ok())
    else {
        return false;
    };
    let Ok(signature) = rsa::pss::Signature::try_from(signature) else {
        return false;
    };
    rsa::pss::VerifyingKey::<sha2::Sha384>::new(key)
        .verify(message, &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILAN: TcbParts = TcbParts {
        fmc: None,
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
    };

    #[test]
    fn min_tcb_syntax() {
        assert_eq!(
            parse_snp_min_tcb("milan=bootloader:3,tee:0,snp:8,microcode:115").unwrap(),
            (SnpProduct::Milan, MILAN)
        );
        assert_eq!(
            parse_snp_min_tcb("Turin=fmc:1,bootloader:2,tee:3,snp:4,microcode:5").unwrap(),
            (
                SnpProduct::Turin,
                TcbParts {
                    fmc: Some(1),
                    bootloader: 2,
                    tee: 3,
                    snp: 4,
                    microcode: 5
                }
            )
        );
        let cases = [
            ("milan", SnpMinTcbError::Syntax("milan".into())),
            (
                "rome=bootloader:3,tee:0,snp:8,microcode:115",
                SnpMinTcbError::Product("rome".into()),
            ),
            (
                "milan=bootloader:3,tee:0,snp:8",
                SnpMinTcbError::Missing {
                    product: SnpProduct::Milan,
                    component: "microcode",
                },
            ),
            (
                "milan=bootloader:3,tee:0,snp:8,microcode:256",
                SnpMinTcbError::Value("microcode"),
            ),
            (
                "milan=bootloader:3,tee:0,snp:8,microcode:-1",
                SnpMinTcbError::Value("microcode"),
            ),
            (
                "milan=bootloader:3,bootloader:4,tee:0,snp:8,microcode:1",
                SnpMinTcbError::Component("bootloader".into()),
            ),
            ("milan=ucode:3", SnpMinTcbError::Component("ucode".into())),
            (
                "milan=bootloader3",
                SnpMinTcbError::Syntax("milan=bootloader3".into()),
            ),
            (
                "genoa=fmc:1,bootloader:3,tee:0,snp:8,microcode:1",
                SnpMinTcbError::Fmc(SnpProduct::Genoa),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_snp_min_tcb(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn requirement_names_the_first_component_below_the_minimum() {
        let unset = TcbRequirement::Unset;
        assert_eq!(
            unset.check(SnpProduct::Milan, MILAN),
            Err(SnpRefusal::NoMinimumTcb {
                product: SnpProduct::Milan
            })
        );
        assert_eq!(
            TcbRequirement::InsecureAny.check(SnpProduct::Milan, MILAN),
            Ok(())
        );
        let floor = TcbRequirement::Unset.with(SnpProduct::Milan, MILAN);
        assert_eq!(floor.check(SnpProduct::Milan, MILAN), Ok(()));
        assert_eq!(
            floor.check(SnpProduct::Genoa, MILAN),
            Err(SnpRefusal::NoMinimumTcb {
                product: SnpProduct::Genoa
            })
        );
        let above = TcbParts {
            microcode: 200,
            ..MILAN
        };
        assert_eq!(floor.check(SnpProduct::Milan, above), Ok(()));
        let low_tee = TcbParts { tee: 0, ..MILAN };
        let strict = TcbRequirement::Unset.with(SnpProduct::Milan, TcbParts { tee: 1, ..MILAN });
        assert_eq!(
            strict.check(SnpProduct::Milan, low_tee),
            Err(SnpRefusal::TcbBelowMinimum {
                product: SnpProduct::Milan,
                component: "tee",
                reported: 0,
                minimum: 1
            })
        );
        let turin = TcbRequirement::Unset.with(
            SnpProduct::Turin,
            TcbParts {
                fmc: Some(2),
                ..MILAN
            },
        );
        assert_eq!(
            turin.check(
                SnpProduct::Turin,
                TcbParts {
                    fmc: Some(1),
                    ..MILAN
                }
            ),
            Err(SnpRefusal::TcbBelowMinimum {
                product: SnpProduct::Turin,
                component: "fmc",
                reported: 1,
                minimum: 2
            })
        );
    }

    /// Reports from tee-sim's simulated AMD-SP (a Genoa, with the published test roots) and
    /// the verifier trusting its roots at its TCB: the MA bit and revocation need reports that
    /// a test can sign.
    #[cfg(feature = "insecure-sim")]
    mod signed {
        use std::time::SystemTime;

        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        use tsuba_protocols::evidence::{GuestPolicy, SnpCertTable};
        use tsuba_tee_sim::{SIM_DEFAULT_TCB, SimAmdSp, SnpReportRequest};
        use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
        use x509_cert::der::asn1::BitString;
        use x509_cert::time::Time;

        use super::*;
        use crate::verifier::snp::SnpVerifier;
        use crate::verifier::{SnpSetupError, VerifierError};

        const TEST_ARK_KEY: &str = include_str!("../../../tee-sim/testdata/test-ark.key.pem");
        const TEST_ASK_KEY: &str = include_str!("../../../tee-sim/testdata/test-ask.key.pem");

        struct Sim {
            _dir: tempfile::TempDir,
            sp: SimAmdSp,
        }

        fn sim() -> Sim {
            let dir = tempfile::tempdir().unwrap();
            let sp = SimAmdSp::open_or_create_with_published_test_roots(dir.path()).unwrap();
            Sim { _dir: dir, sp }
        }

        fn verifier(sim: &Sim) -> SnpVerifier {
            SnpVerifier::with_amd_roots()
                .unwrap()
                .insecure_add_simulated_root(sim.sp.ark_der(), sim.sp.ask_der())
                .unwrap()
                .with_min_tcb(SnpProduct::Genoa, SIM_DEFAULT_TCB)
        }

        fn verify(
            verifier: &SnpVerifier,
            sim: &Sim,
            policy: GuestPolicy,
        ) -> Result<(), VerifierError> {
            let mut request = SnpReportRequest::new([1; 48], [2; 32], Default::default());
            request.policy = policy;
            let signed = sim.sp.report(&request).unwrap();
            let table = SnpCertTable::parse(&signed.cert_table).unwrap();
            verifier
                .verify_report(&signed.report, Some(&table), SystemTime::now())
                .map(|_| ())
        }

        fn cert(der: &[u8]) -> x509_cert::Certificate {
            x509_cert::Certificate::from_der(der).unwrap()
        }

        /// A CRL issued by `issuer`, signed with `key_pem`, revoking `serials`.
        fn crl(
            issuer: &x509_cert::Certificate,
            key_pem: &str,
            serials: &[&x509_cert::Certificate],
        ) -> Vec<u8> {
            let now = Time::try_from(SystemTime::now()).unwrap();
            let tbs = TbsCertList {
                version: x509_cert::Version::V2,
                signature: issuer.signature_algorithm.clone(),
                issuer: issuer.tbs_certificate.subject.clone(),
                this_update: now,
                next_update: None,
                revoked_certificates: Some(
                    serials
                        .iter()
                        .map(|c| RevokedCert {
                            serial_number: c.tbs_certificate.serial_number.clone(),
                            revocation_date: now,
                            crl_entry_extensions: None,
                        })
                        .collect(),
                ),
                crl_extensions: None,
            };
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem).unwrap();
            let signature = rsa::pss::SigningKey::<sha2::Sha384>::new(key)
                .sign_with_rng(&mut rand::rngs::OsRng, &tbs.to_der().unwrap());
            CertificateList {
                tbs_cert_list: tbs,
                signature_algorithm: issuer.signature_algorithm.clone(),
                signature: BitString::from_bytes(&signature.to_vec()).unwrap(),
            }
            .to_der()
            .unwrap()
        }

        fn refusal(result: Result<(), VerifierError>) -> SnpRefusal {
            match result {
                Err(VerifierError::SnpRefused(refusal)) => refusal,
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn migration_agent_policy_is_refused() {
            let sim = sim();
            let verifier = verifier(&sim);
            let base = tsuba_tee_sim::SIM_DEFAULT_POLICY;
            verify(&verifier, &sim, base).unwrap();
            let with_ma = GuestPolicy(base.0 | GuestPolicy::MIGRATE_MA);
            assert_eq!(
                refusal(verify(&verifier, &sim, with_ma)),
                SnpRefusal::MigrationAgentAllowed
            );
        }

        #[test]
        fn simulated_genoa_is_held_to_the_genoa_minimum() {
            let sim = sim();
            let policy = tsuba_tee_sim::SIM_DEFAULT_POLICY;
            let milan_only = SnpVerifier::with_amd_roots()
                .unwrap()
                .insecure_add_simulated_root(sim.sp.ark_der(), sim.sp.ask_der())
                .unwrap()
                .with_min_tcb(SnpProduct::Milan, SIM_DEFAULT_TCB);
            assert_eq!(
                refusal(verify(&milan_only, &sim, policy)),
                SnpRefusal::NoMinimumTcb {
                    product: SnpProduct::Genoa
                }
            );
        }

        #[test]
        fn revoked_ask_and_vcek_are_refused() {
            let sim = sim();
            let ark = cert(sim.sp.ark_der());
            let ask = cert(sim.sp.ask_der());
            let vcek = cert(&sim.sp.vcek_der(SIM_DEFAULT_TCB).unwrap());
            let policy = tsuba_tee_sim::SIM_DEFAULT_POLICY;

            // A list from the ARK that revokes nothing: accepted, nothing changes.
            let (empty, count) = verifier(&sim)
                .with_crl(&crl(&ark, TEST_ARK_KEY, &[]))
                .unwrap();
            assert_eq!(count, 0);
            verify(&empty, &sim, policy).unwrap();

            // The ARK revokes the ASK (DER list).
            let (revoked, count) = verifier(&sim)
                .with_crl(&crl(&ark, TEST_ARK_KEY, &[&ask]))
                .unwrap();
            assert_eq!(count, 1);
            assert_eq!(
                refusal(verify(&revoked, &sim, policy)),
                SnpRefusal::Revoked {
                    what: "ask",
                    serial: hex::encode(ask.tbs_certificate.serial_number.as_bytes()),
                }
            );

            // The ASK revokes the VCEK (PEM list).
            let der = crl(&ask, TEST_ASK_KEY, &[&vcek]);
            let pem = x509_cert::der::pem::encode_string(
                "X509 CRL",
                x509_cert::der::pem::LineEnding::LF,
                &der,
            )
            .unwrap();
            let (revoked, _) = verifier(&sim).with_crl(pem.as_bytes()).unwrap();
            assert_eq!(
                refusal(verify(&revoked, &sim, policy)),
                SnpRefusal::Revoked {
                    what: "vcek",
                    serial: hex::encode(vcek.tbs_certificate.serial_number.as_bytes()),
                }
            );
        }

        #[test]
        fn forged_tampered_and_malformed_lists_are_refused() {
            let sim = sim();
            let ark = cert(sim.sp.ark_der());
            let ask = cert(sim.sp.ask_der());
            // Signed by the ASK's key but naming the ARK as issuer: the signature does not
            // verify under the ARK.
            let forged = crl(&ark, TEST_ASK_KEY, &[&ask]);
            assert!(matches!(
                verifier(&sim).with_crl(&forged),
                Err(SnpSetupError::Crl(SnpCrlError::NotSignedByRoot))
            ));
            // A real AMD root is not the issuer of a list the sim ARK signed, and a verifier
            // without the sim roots trusts no signer of it.
            let good = crl(&ark, TEST_ARK_KEY, &[&ask]);
            assert!(matches!(
                SnpVerifier::with_amd_roots().unwrap().with_crl(&good),
                Err(SnpSetupError::Crl(SnpCrlError::NotSignedByRoot))
            ));
            // Another serial in the signed list, the signature kept.
            let mut tampered = CertificateList::from_der(&good).unwrap();
            if let Some(entries) = tampered.tbs_cert_list.revoked_certificates.as_mut() {
                entries[0].serial_number = x509_cert::serial_number::SerialNumber::from(77u8);
            }
            assert!(matches!(
                verifier(&sim).with_crl(&tampered.to_der().unwrap()),
                Err(SnpSetupError::Crl(SnpCrlError::NotSignedByRoot))
            ));
            for junk in [&b""[..], b"junk", &good[..good.len() / 2]] {
                assert!(matches!(
                    verifier(&sim).with_crl(junk),
                    Err(SnpSetupError::Crl(SnpCrlError::Format))
                ));
            }
            assert!(matches!(
                verifier(&sim).with_crl(&vec![0; MAX_CRL_LEN + 1]),
                Err(SnpSetupError::Crl(SnpCrlError::TooLarge))
            ));
        }
    }
}

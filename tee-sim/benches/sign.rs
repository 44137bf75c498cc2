//! Reports signed per second by the simulated AMD-SP (docs/performance.md, "Simulated TEE").
//!
//! `sign_report` is the ECDSA P-384 signature over a fresh report; `report` adds the certificate
//! table (the VCEK certificate is cached per TCB, as the sim device serves it); the floor is one
//! SHA-384 of the signed region, the part no signer can avoid.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha384};
use tsuba_protocols::evidence::ReportData;
use tsuba_tee_sim::{SimAmdSp, SnpReportRequest};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sp = SimAmdSp::open_or_create_with_published_test_roots(dir.path()).expect("sim");
    let req = SnpReportRequest::new([0x11; 48], [0x22; 32], ReportData([0x33; 64]));
    let mut group = c.benchmark_group("sim_snp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_report", |b| {
        b.iter(|| sp.sign_report(&req).expect("sign"))
    });
    group.bench_function("report_with_cert_table", |b| {
        b.iter(|| sp.report(&req).expect("report"))
    });
    group.bench_function("floor_sha384_of_signed_region", |b| {
        let region = [0x5Au8; 0x2A0];
        b.iter(|| Sha384::digest(region))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Guest round trip for one piece of simulated evidence (docs/performance.md, "Simulated TEE"):
//! the sim attester asks the real tee-sim device server over a Unix socket pair (the host end
//! of the virtio-serial port is a Unix socket too) and checks the reply, next to the floor of
//! signing the same evidence directly in the simulator.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tsuba_attestation_agent::attester::{Attester, SimDeviceAttester};
use tsuba_protocols::evidence::ReportData;
use tsuba_tee_sim::{
    SimAmdSp, SimLaunch, SimTdx, SnpLaunch, SnpReportRequest, TdxLaunch, TdxQuoteRequest,
};

fn attester(runtime: &tokio::runtime::Runtime, launch: SimLaunch) -> SimDeviceAttester {
    let (guest, host) = UnixStream::pair().expect("socket pair");
    host.set_nonblocking(true).expect("nonblocking");
    runtime.spawn(async move {
        let host = tokio::net::UnixStream::from_std(host).expect("tokio stream");
        tsuba_tee_sim::serve(host, launch).await
    });
    SimDeviceAttester::from_stream(Box::new(guest)).expect("sim attester")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sp =
        Arc::new(SimAmdSp::open_or_create_with_published_test_roots(dir.path()).expect("sim snp"));
    let tdx = Arc::new(SimTdx::open_or_create(dir.path()).expect("sim tdx"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let snp = attester(
        &runtime,
        SimLaunch::Snp {
            sp: sp.clone(),
            launch: SnpLaunch::new([1; 48], [2; 32]),
        },
    );
    let td = attester(
        &runtime,
        SimLaunch::Tdx {
            sim: tdx.clone(),
            launch: Box::new(TdxLaunch::new([1; 48], [2; 48])),
        },
    );
    let rd = ReportData([3; 64]);
    let mut group = c.benchmark_group("sim_round_trip");
    group.bench_function("sim_snp_evidence", |b| {
        b.iter(|| snp.evidence(&rd).expect("evidence"))
    });
    group.bench_function("floor_sim_snp_report_signed_in_process", |b| {
        let req = SnpReportRequest::new([1; 48], [2; 32], rd);
        b.iter(|| sp.report(&req).expect("report"))
    });
    group.bench_function("sim_tdx_evidence", |b| {
        b.iter(|| td.evidence(&rd).expect("evidence"))
    });
    group.bench_function("floor_sim_tdx_quote_signed_in_process", |b| {
        let req = TdxQuoteRequest::new([1; 48], [2; 48], rd);
        b.iter(|| tdx.quote(&req).expect("quote"))
    });
    group.finish();
    drop((snp, td));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}

criterion_group!(benches, bench);
criterion_main!(benches);

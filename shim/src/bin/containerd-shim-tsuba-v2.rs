//! `containerd-shim-tsuba-v2`: containerd's runtime `io.containerd.tsuba.v2`.
//!
//! containerd runs it with `start` (spawn or join the pod's shim, print its address), `delete`
//! (clean up after a dead shim) or no action (serve the task API). See docs/shim.md.

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<tsuba_shim::task_v2::TsubaShim>(
        tsuba_shim::task_v2::RUNTIME_ID,
        None,
    )
    .await;
}

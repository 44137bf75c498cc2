//! `tsuba guest build`: the guest kernel and a reproducible initrd.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use tsuba_vmm_tee::guest_image::{self, DEFAULT_MODULES, GuestImageSpec};

/// Guest image commands.
#[derive(Debug, clap::Args)]
pub(crate) struct GuestArgs {
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GuestCommand {
    /// Build vmlinuz + initrd.img + manifest.json. The same inputs give byte-identical output.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Root of the unpacked linux-image package (scripts/setup prints it).
    #[arg(long, env = "TSUBA_KERNEL_PACKAGE")]
    kernel_package: PathBuf,
    /// The statically linked agent (`make agent` builds it).
    #[arg(long)]
    agent: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Kernel modules to include (with their dependencies); default: the standard set.
    #[arg(long = "module")]
    modules: Vec<String>,
    /// Debug image: adds a static busybox as /bin/sh. Never use it for real workloads.
    #[arg(long)]
    debug: bool,
    /// The busybox binary for --debug.
    #[arg(long, default_value = "/bin/busybox", requires = "debug")]
    busybox: PathBuf,
    /// Timestamp of every initrd entry.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u32,
}

pub(crate) fn run(args: GuestArgs) -> anyhow::Result<ExitCode> {
    let GuestCommand::Build(args) = args.command;
    let modules = if args.modules.is_empty() {
        DEFAULT_MODULES.iter().map(|m| (*m).to_owned()).collect()
    } else {
        args.modules
    };
    let spec = GuestImageSpec {
        kernel_package: args.kernel_package,
        agent: args.agent,
        modules,
        debug_busybox: args.debug.then_some(args.busybox),
        source_date_epoch: args.source_date_epoch,
    };
    let image = guest_image::build(&spec, &args.out).context("building the guest image")?;
    let m = &image.manifest;
    println!("{}  {}", m.kernel_sha256, image.kernel.display());
    println!("{}  {}", m.initrd_sha256, image.initrd.display());
    println!(
        "kernel {}, {} modules, initrd {} bytes{}; manifest {}",
        m.contents.kernel_release,
        m.contents.modules.len(),
        m.initrd_bytes,
        if args.debug {
            " (DEBUG: has a shell)"
        } else {
            ""
        },
        image.manifest_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

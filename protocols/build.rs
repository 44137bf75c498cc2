//! Generates the agent API (protobuf messages and ttrpc client/server) from `proto/`.

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() -> std::io::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let protos = ["proto/agent.proto"];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(protos)
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    // The generated files start with inner attributes and docs (`#![..]`, `//!`), which `include!` cannot
    // take; the including module carries the equivalent outer `#[allow]` instead.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = out_dir.join(name);
        let text = std::fs::read_to_string(&path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n"))?;
    }
    Ok(())
}

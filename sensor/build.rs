//! Builds the kernel programs (`sensor-ebpf`) with the nightly toolchain through aya-build and
//! leaves the object in `OUT_DIR/palisade-sensor-ebpf`, which `capture` embeds.
//!
//! Needs `rustup` (with a nightly toolchain and its `rust-src`) and `bpf-linker` on PATH:
//! `scripts/setup.sh` installs them. `AYA_BUILD_SKIP=1` skips the build (the binary then cannot
//! use `--source ebpf`).

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("sensor crate has no parent directory"))?;
    let ebpf_dir = workspace.join("sensor-ebpf");
    let common_dir = workspace.join("sensor-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let root_dir = ebpf_dir
        .to_str()
        .context("the sensor-ebpf path is not UTF-8")?;
    let skip = std::env::var("AYA_BUILD_SKIP")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if skip {
        println!("cargo:rustc-cfg=palisade_no_ebpf");
    }
    println!("cargo:rustc-check-cfg=cfg(palisade_no_ebpf)");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "palisade-sensor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (needs rustup with nightly + rust-src, and bpf-linker: run scripts/setup.sh)")
}

//! What the end-to-end tests of `bench run` share.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// The `server` and `loadgen` binaries, built once next to `bench`.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "servers", "-p", "loadgen"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building server and loadgen failed");
        Path::new(BENCH).parent().unwrap().to_path_buf()
    })
}

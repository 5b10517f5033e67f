//! `hako img` (being written).

/// Arguments of `hako img`.
#[derive(clap::Args, Debug)]
pub struct ImgArgs {}

/// Runs `hako img`; returns the exit status.
pub fn run(_args: ImgArgs) -> anyhow::Result<i32> {
    anyhow::bail!("hako img is not available yet")
}

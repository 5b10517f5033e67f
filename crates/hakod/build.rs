//! Embeds the web console's third-party files (xterm.js and its fit add-on, from
//! the npm packages in web/package-lock.json) into the binary.
//!
//! They come from `web/node_modules`, which `scripts/install-deps.sh` fills with
//! `npm ci`. When they are missing and npm is there, this script runs `npm ci`
//! itself (its cache in ~/.cache/hako/npm unless npm_config_cache says otherwise).
//! When they still are missing the build succeeds: the web console's page then
//! says that its assets are missing and how to get them (`ASSETS_MISSING`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant, file under web/node_modules).
const FILES: [(&str, &str); 3] = [
    ("XTERM_JS", "@xterm/xterm/lib/xterm.js"),
    ("XTERM_CSS", "@xterm/xterm/css/xterm.css"),
    ("FIT_JS", "@xterm/addon-fit/lib/addon-fit.js"),
];

fn all_there(modules: &Path) -> bool {
    FILES.iter().all(|(_, f)| modules.join(f).is_file())
}

fn npm_ci(web: &Path) {
    let mut cmd = Command::new("npm");
    // npm's report on stderr: a build script's stdout is for cargo.
    cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web)
        .stdout(std::io::stderr());
    if std::env::var_os("npm_config_cache").is_none() {
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env(
                "npm_config_cache",
                PathBuf::from(home).join(".cache/hako/npm"),
            );
        }
    }
    match cmd.status() {
        Ok(st) if st.success() => {}
        Ok(st) => println!("cargo:warning=npm ci in {} failed ({st})", web.display()),
        Err(e) => println!("cargo:warning=cannot run npm ({e}): the web console has no xterm.js"),
    }
}

fn main() {
    let web =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("web");
    let modules = web.join("node_modules");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed=web/node_modules/.package-lock.json");
    for (_, f) in FILES {
        println!("cargo:rerun-if-changed=web/node_modules/{f}");
    }
    if !all_there(&modules) && web.join("package-lock.json").is_file() {
        npm_ci(&web);
    }
    let mut out = String::new();
    let there = all_there(&modules);
    for (name, f) in FILES {
        let path = modules.join(f);
        if there {
            out += &format!(
                "pub(crate) const {name}: &[u8] = include_bytes!({:?});\n",
                path.display().to_string()
            );
        } else {
            out += &format!("pub(crate) const {name}: &[u8] = b\"\";\n");
        }
    }
    out += &format!("pub(crate) const ASSETS_MISSING: bool = {};\n", !there);
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("assets.rs");
    std::fs::write(dest, out).expect("write the assets file");
}

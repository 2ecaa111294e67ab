//! Compiles the built-in policy crates to `wasm32-unknown-unknown` and hands their paths to
//! `src/lib.rs`, the way wasmtime builds its test-program artifacts: a nested `cargo build`
//! into a target directory of its own, so it never waits on the outer build's lock.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// `(crate name, policy name)` of every built-in policy.
const POLICIES: &[(&str, &str)] = &[
    ("ck8s-policy-build-ref", "build-ref"),
    ("ck8s-policy-legacy-labels", "legacy-labels"),
    ("ck8s-policy-kaniko-cache", "kaniko-cache"),
];
/// The crate that bundles them all into one module.
const BUNDLE: &str = "ck8s-builtin-bundle";
const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-policy";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let policies_dir = manifest_dir.parent().unwrap();
    let workspace = policies_dir.parent().unwrap();
    for dir in [
        "api",
        "sdk",
        "build-ref",
        "legacy-labels",
        "kaniko-cache",
        "builtin/bundle",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            policies_dir.join(dir).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            policies_dir.join(dir).join("Cargo.toml").display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(".cargo/config.toml").display()
    );
    // Inherited by the nested cargo: `false` keeps the guests' names for profiling.
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_WASM_POLICY_STRIP");

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share <target>/wasm-policies
    // between all profiles and hashes so the guests are compiled once.
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_root = out_dir.ancestors().nth(4).unwrap_or(&out_dir).to_path_buf();
    let wasm_target_dir = target_root.join("wasm-policies");

    // Two builds: the policies as modules of their own, then the bundle, which links them
    // with their `bundled` feature (no exports of their own). One build would unify that
    // feature into the modules of their own too.
    let policies: Vec<&str> = POLICIES.iter().map(|(krate, _)| *krate).collect();
    build_wasm(workspace, &wasm_target_dir, &policies);
    build_wasm(workspace, &wasm_target_dir, &[BUNDLE]);

    let mut generated = String::from(
        "/// `(policy name, wasm bytes)` of every built-in policy.\npub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    let artifact = |krate: &str| {
        let file = wasm_target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(file.exists(), "expected {}", file.display());
        file.display().to_string()
    };
    for (krate, name) in POLICIES {
        generated.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            artifact(krate)
        ));
    }
    generated.push_str("];\n");
    generated.push_str(&format!(
        "/// The built-in policies in one bundle module, in the order of [`BUILTIN`].\npub static BUNDLE: &[u8] = include_bytes!({:?});\n",
        artifact(BUNDLE)
    ));
    std::fs::write(out_dir.join("builtin.rs"), generated).unwrap();
}

/// `cargo build` of `crates` for the guest target into `target_dir`.
fn build_wasm(workspace: &std::path::Path, target_dir: &std::path::Path, crates: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
            "--target-dir",
        ])
        .arg(target_dir);
    for krate in crates {
        cmd.args(["-p", krate]);
    }
    // The outer build's flags are for the host, not for the guests: let .cargo/config.toml's
    // [target.wasm32-unknown-unknown] rustflags apply.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the wasm policies");
    if !status.success() {
        panic!(
            "building the built-in policies for {TARGET} failed.\nhelp: run `rustup target add {TARGET}` if the target is missing"
        );
    }
}

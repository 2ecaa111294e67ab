//! `plugin.yaml`: the krew manifest (`krew.googlecontainertools.github.com/v1alpha2` Plugin).
//!
//! One platform per archive, selected by os/arch; krew unpacks the archive, moves `files` into
//! the plugin's directory and links `bin` into `~/.krew/bin` as `kubectl-ck8s`.

use crate::archive::stem;
use crate::{REPOSITORY, Target, VERSION, sha256_file};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `kubectl ck8s`: krew's plugin name is the executable's name without `kubectl-`.
pub const PLUGIN_NAME: &str = "ck8s";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugin {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Serialize)]
struct Metadata {
    name: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    version: String,
    homepage: &'static str,
    short_description: &'static str,
    description: &'static str,
    caveats: &'static str,
    platforms: Vec<Platform>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    files: Vec<FileOp>,
    bin: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct FileOp {
    from: String,
    to: &'static str,
}

const SHORT: &str = "Guard and operate the codex-k8s platform";
const DESCRIPTION: &str = "\
The codex-k8s runbooks as one kubectl plugin: smoke checks of the production
installation, ports, runs, labels, registry gc, diagnose and mitigate, each with
a clear verdict and the runbook's remedy beside each failure. `kubectl ck8s policy`
checks manifests offline with the same WebAssembly policies the ck8s-admission
webhook enforces (build-ref, legacy-labels, kaniko-cache).
";
const CAVEATS: &str = "\
Shell completion through kubectl (1.26+) needs `kubectl_complete-ck8s` on PATH:
it is in the release archive next to kubectl-ck8s; krew does not link it.
Read-only and operator roles for plugin users: deploy/rbac in the repository.
";

/// The manifest for `archives` (target, path), downloadable under `base_url`.
pub fn manifest(archives: &[(Target, PathBuf)], base_url: &str) -> Result<String> {
    let mut platforms = Vec::new();
    for (target, path) in archives {
        let dir = stem(target);
        let name = path.file_name().unwrap().to_string_lossy();
        platforms.push(Platform {
            selector: Selector {
                match_labels: BTreeMap::from([("os", target.os), ("arch", target.arch)]),
            },
            uri: format!("{base_url}/{name}"),
            sha256: sha256_file(path)?,
            files: vec![
                FileOp {
                    from: format!("{dir}/kubectl-ck8s"),
                    to: ".",
                },
                FileOp {
                    from: format!("{dir}/LICENSE"),
                    to: ".",
                },
            ],
            bin: "kubectl-ck8s",
        });
    }
    let plugin = Plugin {
        api_version: "krew.googlecontainertools.github.com/v1alpha2",
        kind: "Plugin",
        metadata: Metadata { name: PLUGIN_NAME },
        spec: Spec {
            version: format!("v{VERSION}"),
            homepage: REPOSITORY,
            short_description: SHORT,
            description: DESCRIPTION,
            caveats: CAVEATS,
            platforms,
        },
    };
    Ok(serde_saphyr::to_string(&plugin)?)
}

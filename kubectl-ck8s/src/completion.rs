//! Shell completion: `completion SHELL` (clap_complete) and kubectl's plugin convention,
//! `kubectl_complete-ck8s`, which kubectl calls with the words typed so far and which answers
//! in cobra's `__complete` format (candidates, then `:<directive>`).
//!
//! Subcommands and flags come from the clap definition; flag values from what the flag takes:
//! its possible values (`-o`, `--dry-run`), file and directory names (`-f`, `--config`,
//! `--kubeconfig`, ...), kubeconfig contexts (`--context`), and namespaces (`-n`) from the
//! cluster when it answers within [`NAMESPACE_TIMEOUT`].

use clap::{Arg, Command, CommandFactory};
use std::path::PathBuf;
use std::time::Duration;

/// How long `-n <TAB>` waits for the cluster before offering nothing.
pub const NAMESPACE_TIMEOUT: Duration = Duration::from_millis(1500);

/// cobra's ShellCompDirective bits.
pub const NO_SPACE: u32 = 2;
pub const NO_FILE_COMP: u32 = 4;

pub fn generate(shell: clap_complete::Shell) -> crate::report::Outcome {
    let mut cmd = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-ck8s", &mut script);
    let report = crate::report::Report::of("completion", vec![]);
    crate::report::Outcome::text(report, String::from_utf8_lossy(&script).into_owned())
}

/// What the word under the cursor is.
#[derive(Debug, PartialEq)]
pub enum Want {
    /// A subcommand or a flag name.
    Words(Vec<String>),
    /// A value of the flag whose long name is given; `prefix` is typed, `lead` is what the
    /// candidates must start with (`--output=` in `--output=js`).
    Value {
        flag: String,
        prefix: String,
        lead: String,
    },
}

/// The flag (of `cmd` or the global ones) that `word` names: `-o`, `--output`.
fn find_flag<'a>(cmd: &'a Command, root: &'a Command, word: &str) -> Option<&'a Arg> {
    let all = || cmd.get_arguments().chain(root.get_arguments());
    if let Some(long) = word.strip_prefix("--") {
        all().find(|a| a.get_long() == Some(long))
    } else if let Some(short) = word.strip_prefix('-').filter(|s| s.chars().count() == 1) {
        let c = short.chars().next()?;
        all().find(|a| a.get_short() == Some(c))
    } else {
        None
    }
}

/// The subcommand the typed words reach, whether the last word is a flag awaiting its value,
/// and the subcommand names on the way (`["policy", "audit"]`).
fn walk<'a>(root: &'a Command, words: &[String]) -> (&'a Command, bool, Vec<String>) {
    let mut cmd = root;
    let mut path = Vec::new();
    let mut skip_value = false;
    for w in words {
        if skip_value {
            skip_value = false;
            continue;
        }
        if w.starts_with('-') {
            skip_value = !w.contains('=')
                && find_flag(cmd, root, w).is_some_and(|a| a.get_action().takes_values());
            continue;
        }
        if let Some(sub) = cmd.find_subcommand(w) {
            cmd = sub;
            path.push(sub.get_name().to_string());
        }
    }
    (cmd, skip_value, path)
}

/// Reads the words typed so far (pure): what is wanted, and the definition of the flag
/// (of the subcommand typed) whose value it is.
pub fn resolve(args: &[String]) -> (Want, Option<Arg>) {
    let root = crate::cli::Cli::command();
    let (last, words) = match args.split_last() {
        Some((l, w)) => (l.as_str(), w),
        None => ("", &[][..]),
    };
    let (cmd, skip_value, _) = walk(&root, words);
    if skip_value && let Some(flag) = words.last().and_then(|w| find_flag(cmd, &root, w)) {
        let want = Want::Value {
            flag: flag.get_id().to_string(),
            prefix: last.into(),
            lead: String::new(),
        };
        return (want, Some(flag.clone()));
    }
    if let Some((name, prefix)) = last.split_once('=')
        && let Some(flag) = find_flag(cmd, &root, name).filter(|a| a.get_action().takes_values())
    {
        let want = Want::Value {
            flag: flag.get_id().to_string(),
            prefix: prefix.into(),
            lead: format!("{name}="),
        };
        return (want, Some(flag.clone()));
    }
    let mut out: Vec<String> = Vec::new();
    if last.starts_with('-') {
        out.extend(
            cmd.get_arguments()
                .chain(root.get_arguments())
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long())
                .map(|l| format!("--{l}")),
        );
    } else {
        out.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_string()),
        );
        // A positional with possible values (`completion SHELL`).
        for a in cmd.get_positionals() {
            out.extend(
                a.get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string()),
            );
        }
    }
    out.retain(|c| c.starts_with(last));
    out.sort();
    out.dedup();
    (Want::Words(out), None)
}

/// Which names a path-valued flag offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Paths {
    Any,
    Dirs,
}

/// File and directory names under the typed prefix: directories end in `/` (and keep the
/// cursor there), hidden entries only when asked for.
pub fn paths(prefix: &str, kind: Paths) -> (Vec<String>, bool) {
    let (dir, stem) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let read = if dir.is_empty() { "." } else { dir };
    let mut out = Vec::new();
    let mut any_dir = false;
    for e in std::fs::read_dir(read).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with(stem) || (name.starts_with('.') && !stem.starts_with('.')) {
            continue;
        }
        let is_dir = e.path().is_dir();
        if is_dir {
            any_dir = true;
            out.push(format!("{dir}{name}/"));
        } else if kind == Paths::Any {
            out.push(format!("{dir}{name}"));
        }
    }
    out.sort();
    (out, any_dir)
}

/// The context names of the kubeconfig the typed words (or `$KUBECONFIG`, a list of files
/// merged as kubectl merges them) point at.
pub fn contexts(kubeconfig: Option<&PathBuf>) -> Vec<String> {
    let config = match crate::cluster::kubeconfig(kubeconfig) {
        Ok(Some(one)) => Some(one),
        Ok(None) => kube::config::Kubeconfig::read().ok(),
        Err(_) => None,
    };
    let mut names: Vec<String> = config
        .map(|c| c.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The kubeconfig the typed words name, else `$KUBECONFIG`.
fn typed_kubeconfig(args: &[String]) -> Option<PathBuf> {
    typed(args, "kubeconfig")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
}

/// The value of `--flag VALUE` / `--flag=VALUE` among the typed words.
fn typed(args: &[String], long: &str) -> Option<String> {
    let flag = format!("--{long}");
    let with_eq = format!("--{long}=");
    args.iter().enumerate().find_map(|(i, w)| {
        if *w == flag {
            args.get(i + 1).cloned()
        } else {
            w.strip_prefix(&with_eq).map(String::from)
        }
    })
}

async fn namespaces(args: &[String]) -> Vec<String> {
    let opts = crate::cluster::ConnectOptions {
        kubeconfig: typed_kubeconfig(args),
        context: typed(args, "context"),
        request_timeout: NAMESPACE_TIMEOUT,
    };
    let work = async {
        let ctx = crate::cluster::connect(&opts, "default", None).await.ok()?;
        let list = ctx
            .all::<k8s_openapi::api::core::v1::Namespace>()
            .list_metadata(&Default::default())
            .await
            .ok()?;
        Some(
            list.items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect(),
        )
    };
    tokio::time::timeout(NAMESPACE_TIMEOUT, work)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The candidates and the cobra directive for the typed words.
pub async fn answer(args: &[String]) -> (Vec<String>, u32) {
    let (prefix, lead, arg) = match resolve(args) {
        (Want::Words(w), _) => return (w, NO_FILE_COMP),
        (Want::Value { prefix, lead, .. }, Some(arg)) => (prefix, lead, arg),
        (Want::Value { .. }, None) => return (vec![], NO_FILE_COMP),
    };
    let value_names = arg.get_value_names().unwrap_or_default().iter();
    let value_name = value_names
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let (mut values, mut directive) = match arg.get_long() {
        Some("context") => (contexts(typed_kubeconfig(args).as_ref()), NO_FILE_COMP),
        Some("namespace") => (namespaces(args).await, NO_FILE_COMP),
        // `-o policyreport` is offered where it is accepted: `policy audit` only.
        Some("output") => {
            let root = crate::cli::Cli::command();
            let (_, _, path) = walk(&root, args);
            let audit = path == ["policy", "audit"];
            (
                crate::output::OutputFormat::names()
                    .into_iter()
                    .filter(|n| audit || n != "policyreport")
                    .collect(),
                NO_FILE_COMP,
            )
        }
        _ if !arg.get_possible_values().is_empty() => (
            arg.get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect(),
            NO_FILE_COMP,
        ),
        _ if value_name.contains("FILE") || value_name.contains("DIR") => {
            let kind = if value_name.contains("FILE") {
                Paths::Any
            } else {
                Paths::Dirs
            };
            let (mut names, dirs) = paths(&prefix, kind);
            if value_name.contains('-') && prefix.is_empty() {
                names.insert(0, "-".into());
            }
            (names, NO_FILE_COMP | if dirs { NO_SPACE } else { 0 })
        }
        _ => (vec![], NO_FILE_COMP),
    };
    values.retain(|v| v.starts_with(&prefix));
    if values.is_empty() {
        directive = NO_FILE_COMP;
    }
    (
        values.into_iter().map(|v| format!("{lead}{v}")).collect(),
        directive,
    )
}

/// The cobra answer: one candidate per line, then `:<directive>`.
pub async fn cobra(args: &[String]) -> String {
    let (candidates, directive) = answer(args).await;
    let mut text: String = candidates.iter().map(|c| format!("{c}\n")).collect();
    text.push_str(&format!(":{directive}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn words(args: &[&str]) -> Vec<String> {
        match resolve(&s(args)).0 {
            Want::Words(w) => w,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn completes_subcommands_and_flags() {
        assert!(words(&["sm"]).contains(&"smoke".to_string()));
        assert_eq!(words(&["gc", ""]), s(&["logs", "run", "status"]));
        assert!(words(&["smoke", "--on"]).contains(&"--only".to_string()));
        assert!(words(&["-n", "prod", "gc", ""]).contains(&"status".to_string()));
        assert_eq!(words(&["completion", "ba"]), s(&["bash"]));
    }

    #[test]
    fn knows_when_a_flag_value_is_wanted() {
        for (args, flag, prefix, lead) in [
            (&["smoke", "-o", ""][..], "output", "", ""),
            (&["smoke", "--output=js"], "output", "js", "--output="),
            (&["policy", "check", "-f", "dir/"], "files", "dir/", ""),
            (&["--context", "pr"], "context", "pr", ""),
            (&["-n", ""], "namespace", "", ""),
        ] {
            assert_eq!(
                resolve(&s(args)).0,
                Want::Value {
                    flag: flag.into(),
                    prefix: prefix.into(),
                    lead: lead.into()
                },
                "{args:?}"
            );
        }
    }

    #[tokio::test]
    async fn static_values_and_paths() {
        assert_eq!(
            answer(&s(&["smoke", "-o", ""])).await,
            (s(&["table", "json", "yaml"]), NO_FILE_COMP)
        );
        assert_eq!(
            answer(&s(&["policy", "audit", "-o", ""])).await.0,
            s(&["table", "json", "yaml", "policyreport"])
        );
        assert_eq!(
            answer(&s(&["policy", "check", "-o", "p"])).await.0,
            Vec::<String>::new()
        );
        assert_eq!(
            answer(&s(&["smoke", "--output=y"])).await.0,
            s(&["--output=yaml"])
        );
        assert_eq!(
            answer(&s(&["mitigate", "kaniko-cache", "--dry-run="]))
                .await
                .0,
            s(&["--dry-run=none", "--dry-run=client", "--dry-run=server"])
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        std::fs::write(dir.path().join("deploy.yaml"), "").unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        let base = format!("{}/", dir.path().display());
        let (c, d) = answer(&s(&["policy", "check", "-f", &base])).await;
        assert_eq!(
            c,
            [format!("{base}deploy.yaml"), format!("{base}manifests/")]
        );
        assert_eq!(d, NO_FILE_COMP | NO_SPACE);
        let (c, _) = answer(&s(&["policy", "check", "--policies", &base])).await;
        assert_eq!(
            c,
            [format!("{base}manifests/")],
            "--policies DIR offers directories"
        );
    }
}

//! Shell completion: `completion SHELL` (clap_complete) and kubectl's plugin convention,
//! `kubectl_complete-ck8s`, which kubectl calls with the words typed so far and which answers
//! in cobra's `__complete` format (candidates, then `:<directive>`).

use clap::CommandFactory;

pub fn generate(shell: clap_complete::Shell) {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "kubectl-ck8s", &mut std::io::stdout());
}

/// Candidates for the last word of `args` (cobra `__complete` protocol): pure.
pub fn candidates(args: &[String]) -> Vec<String> {
    let root = crate::cli::Cli::command();
    let (last, words) = match args.split_last() {
        Some((l, w)) => (l.as_str(), w),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    for w in words.iter().filter(|w| !w.starts_with('-')) {
        match cmd.find_subcommand(w) {
            Some(sub) => cmd = sub,
            None => break,
        }
    }
    let mut out: Vec<String> = Vec::new();
    if last.starts_with('-') {
        let flags = cmd
            .get_arguments()
            .chain(root.get_arguments())
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"));
        out.extend(flags);
    } else {
        out.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_string()),
        );
    }
    out.retain(|c| c.starts_with(last));
    out.sort();
    out.dedup();
    out
}

/// Prints the cobra answer; directive 4 = ShellCompDirectiveNoFileComp.
pub fn cobra(args: &[String]) {
    for c in candidates(args) {
        println!("{c}");
    }
    println!(":4");
}

#[cfg(test)]
mod tests {
    use super::candidates;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn completes_subcommands_and_flags() {
        assert!(candidates(&s(&["sm"])).contains(&"smoke".to_string()));
        assert_eq!(candidates(&s(&["gc", ""])), s(&["logs", "run", "status"]));
        assert!(candidates(&s(&["smoke", "--on"])).contains(&"--only".to_string()));
    }
}

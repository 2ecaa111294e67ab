//! `-o table|json|yaml|policyreport`, and the progress line a flow may draw on stderr.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport objects: `policy audit` only.
    #[value(name = "policyreport")]
    Policyreport,
}

impl OutputFormat {
    /// The names `-o` accepts (for completion and messages).
    pub fn names() -> Vec<String> {
        use clap::ValueEnum;
        Self::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect()
    }
}

/// A progress line on stderr while a flow waits on the network: drawn only when stderr is a
/// terminal, so pipes and scripts see nothing of it. Not part of a flow's result.
pub fn progress(message: &str) -> Progress {
    use std::io::IsTerminal;
    Progress(std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    }))
}

/// A spinner with a message; cleared when dropped.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn set(&self, message: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.to_string());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

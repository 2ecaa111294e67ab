//! `-o table|json|yaml`.

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
    /// Prints `value` as JSON or YAML; `None` for table output (the caller renders it).
    pub fn print_structured<T: serde::Serialize>(self, value: &T) -> Option<Result<(), String>> {
        match self {
            OutputFormat::Table => None,
            OutputFormat::Policyreport => Some(Err(
                "-o policyreport is for `kubectl ck8s policy audit`; use -o json or -o yaml here"
                    .to_string(),
            )),
            OutputFormat::Json => Some(
                serde_json::to_string_pretty(value)
                    .map(|s| println!("{s}"))
                    .map_err(|e| e.to_string()),
            ),
            OutputFormat::Yaml => Some(
                serde_yaml::to_string(value)
                    .map(|s| print!("{s}"))
                    .map_err(|e| e.to_string()),
            ),
        }
    }
}

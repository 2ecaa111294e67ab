//! Checks and reports: the one shape every flow's verdict takes.
//!
//! A check has a stable id (scripts and `--only`/`--skip` use it), a status, a one-line
//! detail and, when it did not pass, the runbook's remedy.

use crate::exit::{Failure, Verdict};
use crate::output::OutputFormat;
use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    pub fn new(id: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            status,
            detail: detail.into(),
            remedy: None,
        }
    }
    pub fn pass(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Pass, detail)
    }
    pub fn warn(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Warn, detail)
    }
    pub fn fail(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, detail)
    }
    /// A check that did not run; the detail is the reason.
    pub fn skip(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(id, Status::Skip, reason)
    }
    /// Attaches the remedy; it is shown only when the check did not pass.
    pub fn remedy(mut self, remedy: impl Into<String>) -> Self {
        if matches!(self.status, Status::Warn | Status::Fail) {
            self.remedy = Some(remedy.into());
        }
        self
    }
}

/// The full report of one command: what `-o json|yaml` prints, for every command (the shape
/// is documented by `kubectl-ck8s/report.schema.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    /// The namespace a cluster command looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The host a network command looked at (`ports`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub verdict: Status,
    pub checks: Vec<Check>,
    /// Flow-specific data (run namespaces, GC jobs, log findings, policy results, ...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl Report {
    pub fn new(command: &str, namespace: &str, checks: Vec<Check>) -> Self {
        let mut r = Self::of(command, checks);
        r.namespace = Some(namespace.into());
        r
    }

    /// A report about a host rather than a namespace.
    pub fn for_host(command: &str, host: &str, checks: Vec<Check>) -> Self {
        let mut r = Self::of(command, checks);
        r.host = Some(host.into());
        r
    }

    /// A report about the whole cluster (no namespace, no host).
    pub fn of(command: &str, checks: Vec<Check>) -> Self {
        let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else {
            Status::Pass
        };
        Report {
            command: command.into(),
            namespace: None,
            host: None,
            verdict,
            checks,
            details: serde_json::Value::Null,
        }
    }

    /// A command whose result is not a list of checks (the `policy` tools): the verdict, and
    /// the result in `details`.
    pub fn structured<T: Serialize>(command: &str, verdict: Verdict, details: &T) -> Self {
        let mut r = Self::of(command, vec![]);
        r.verdict = match verdict {
            Verdict::Pass => Status::Pass,
            Verdict::Fail => Status::Fail,
        };
        r.with_details(serde_json::to_value(details).unwrap_or_default())
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::pass_if(self.verdict != Status::Fail)
    }

    /// Prints the checks table and the summary line; `listing` is table-only text printed
    /// before the checks (listings that JSON carries in `details`).
    fn print_table(&self, listing: Option<&str>) {
        if let Some(listing) = listing {
            print!("{listing}");
        }
        println!("{}", checks_table(&self.checks));
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        println!(
            "{}: {} pass, {} warn, {} fail, {} skip -> {}",
            self.command,
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip),
            self.verdict.as_str().to_uppercase()
        );
    }
}

/// `-o policyreport` anywhere but `policy audit`: refused before any flow runs.
pub fn policyreport_refused() -> Failure {
    Failure::usage("-o policyreport is only for `kubectl ck8s policy audit`")
        .with_help("use -o table, json or yaml")
}

/// What a flow hands back to [`crate::cli::run`]: its report, and what `-o table` shows of it.
/// Rendered once, by [`Outcome::render`]; a flow that returns one prints nothing itself.
#[derive(Debug)]
pub enum Outcome {
    Report {
        report: Report,
        table: TableView,
        /// `-o policyreport` (`policy audit` only): the wgpolicyk8s.io objects to print.
        policy_reports: Option<Vec<serde_json::Value>>,
    },
    /// A flow that could not finish after part of its result was made (`policy test` with a
    /// suite that would not run): `shown` is printed as it is, the `errors` on stderr, and the
    /// failure is the exit.
    Unfinished {
        shown: String,
        errors: Vec<Failure>,
        failure: Failure,
    },
}

/// What `-o table` shows of a report.
#[derive(Debug)]
pub enum TableView {
    /// The checks table and the summary line, after an optional listing (the objects JSON
    /// carries in `details`).
    Checks { listing: Option<String> },
    /// The flow's own text, as it is (the policy tools' listings, a scaffold's summary, logs).
    Text(String),
}

impl Outcome {
    /// A report shown as its checks table.
    pub fn checks(report: Report) -> Self {
        Self::listing(report, None)
    }

    /// A report shown as `listing`, then its checks table.
    pub fn listing(report: Report, listing: Option<String>) -> Self {
        Outcome::Report {
            report,
            table: TableView::Checks { listing },
            policy_reports: None,
        }
    }

    /// A report whose table form is the flow's own text.
    pub fn text(report: Report, text: String) -> Self {
        Outcome::Report {
            report,
            table: TableView::Text(text),
            policy_reports: None,
        }
    }

    /// Writes the outcome to stdout in `format` and returns its verdict: the one place a
    /// flow's result is printed.
    pub fn render(self, format: OutputFormat) -> Result<Verdict, Failure> {
        let (report, table, policy_reports) = match self {
            Outcome::Unfinished {
                shown,
                errors,
                failure,
            } => {
                print!("{shown}");
                errors.iter().for_each(Failure::eprint);
                return Err(failure);
            }
            Outcome::Report {
                report,
                table,
                policy_reports,
            } => (report, table, policy_reports),
        };
        let encode =
            |e: &dyn std::fmt::Display| Failure::internal(format!("cannot print the report: {e}"));
        match format {
            OutputFormat::Policyreport => {
                let reports = policy_reports.ok_or_else(policyreport_refused)?;
                // A YAML stream, one document per report, as `kubectl apply -f -` reads it.
                for r in &reports {
                    let text = serde_saphyr::to_string(r).map_err(|e| encode(&e))?;
                    print!("---\n{text}");
                }
            }
            OutputFormat::Json => {
                let text = serde_json::to_string_pretty(&report).map_err(|e| encode(&e))?;
                println!("{text}");
            }
            OutputFormat::Yaml => {
                print!(
                    "{}",
                    serde_saphyr::to_string(&report).map_err(|e| encode(&e))?
                )
            }
            OutputFormat::Table => match table {
                TableView::Text(text) => print!("{text}"),
                TableView::Checks { listing } => report.print_table(listing.as_deref()),
            },
        }
        Ok(report.verdict())
    }
}

fn checks_table(checks: &[Check]) -> Table {
    let mut table = table(&["CHECK", "STATUS", "DETAIL", "REMEDY"]);
    for c in checks {
        let color = match c.status {
            Status::Pass => Color::Green,
            Status::Warn => Color::Yellow,
            Status::Fail => Color::Red,
            Status::Skip => Color::DarkGrey,
        };
        table.add_row(vec![
            Cell::new(&c.id),
            Cell::new(c.status.as_str()).fg(color),
            Cell::new(&c.detail),
            Cell::new(c.remedy.as_deref().unwrap_or("")),
        ]);
    }
    table
}

/// The width tables wrap at when stdout is not a terminal.
pub const PIPE_WIDTH: u16 = 160;

/// An empty table with `header`: on a terminal comfy-table wraps to its width; in a pipe, it
/// wraps at a readable width too.
fn table(header: &[&str]) -> Table {
    use std::io::IsTerminal;
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if !std::io::stdout().is_terminal() {
        table.set_width(PIPE_WIDTH);
    }
    table
}

/// A plain listing table (no colors), for the flows' object listings.
pub fn listing(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = table(header);
    table.add_rows(rows);
    format!("{table}\n")
}

/// `--only` / `--skip` by id: a check id matches a filter entry equal to it or to its prefix
/// before a dot (`rollout` selects `rollout.worker`).
pub fn selected(id: &str, only: &[String], skip: &[String]) -> bool {
    let matches = |f: &String| id == f || id.starts_with(&format!("{f}."));
    (only.is_empty() || only.iter().any(matches)) && !skip.iter().any(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Outcome {
        /// The verdict, without rendering.
        pub fn verdict(&self) -> Verdict {
            match self {
                Outcome::Report { report, .. } => report.verdict(),
                // Its exit is the failure's (2), never a pass.
                Outcome::Unfinished { .. } => Verdict::Fail,
            }
        }
    }

    #[test]
    fn verdict_fails_only_on_fail() {
        let r = Report::new("t", "ns", vec![Check::pass("a", ""), Check::warn("b", "")]);
        assert_eq!(r.verdict(), Verdict::Pass);
        let r = Report::new("t", "ns", vec![Check::pass("a", ""), Check::fail("b", "")]);
        assert_eq!(r.verdict(), Verdict::Fail);
    }

    #[test]
    fn an_outcome_has_its_reports_verdict() {
        let failing = Report::new("t", "ns", vec![Check::pass("a", ""), Check::fail("b", "")]);
        assert_eq!(Outcome::checks(failing).verdict(), Verdict::Fail);
        let passing = Report::of("t", vec![Check::warn("a", "")]);
        assert_eq!(
            Outcome::text(passing, "listing\n".into()).verdict(),
            Verdict::Pass
        );
    }

    #[test]
    fn remedy_only_when_not_passing() {
        assert_eq!(Check::pass("a", "").remedy("x").remedy, None);
        assert_eq!(
            Check::fail("a", "").remedy("x").remedy.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn only_and_skip_by_id_or_prefix() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (id, only, skip, want) in [
            ("rollout.worker", s(&[]), s(&[]), true),
            ("rollout.worker", s(&["rollout"]), s(&[]), true),
            ("rollout.worker", s(&["pods.ready"]), s(&[]), false),
            ("rollout.worker", s(&[]), s(&["rollout.worker"]), false),
            ("rollouts", s(&["rollout"]), s(&[]), false),
        ] {
            assert_eq!(selected(id, &only, &skip), want, "{id} {only:?} {skip:?}");
        }
    }
}

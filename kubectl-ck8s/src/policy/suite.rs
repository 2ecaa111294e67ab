//! `policy test [PATH...]`: YAML test suites run against built `.wasm` files with the
//! webhook's runtime and decision logic.
//!
//! A suite is a file named `*.ck8s-test.yaml` (or `.yml`); by convention
//! `tests/suite.ck8s-test.yaml` in the policy's crate. The format (documented for authors in
//! `policies/README.md`):
//!
//! ```yaml
//! policy: builtin:build-ref        # or a .wasm path, or a ValidatingAdmissionPolicy file
//!                                  # (.yaml/.yml: its bindings give the mode), relative to this file
//! settings: {}                     # optional, over the policy's declared defaults (not for a VAP)
//! mode: deny                       # optional: deny (default) | warn | audit (not for a VAP)
//! cases:
//!   - name: '"-b feature/x" is rejected'
//!     operation: CREATE            # default CREATE; UPDATE, DELETE, CONNECT
//!     resource: {...}              # exactly one of: resource (inline object),
//!     # file: manifests/x.yaml     #   file (a manifest with one object, relative to this file),
//!     # review: {...}              #   review (a whole admission.k8s.io/v1 AdmissionReview)
//!     settings: {}                 # optional, over the suite's settings
//!     mode: warn                   # optional, over the suite's mode
//!     expect: deny                 # allow | deny | warn | audit
//!     messages: ["command-line flag"]   # each in some finding (path, message, value or fix)
//!     paths: ["spec.containers[0].env[CODEXK8S_BUILD_REF]"]  # each the path of some finding
//!     hidden: ["hunter2"]          # in no finding: secrets must never be shown
//! ```

use super::check::{FindingText, effects};
use super::{is_vap_file, load_ref, manifests, runtime};
use crate::exit::{Failure, Verdict};
use crate::report::Report;
use ck8s_policy_runtime::api::Operation;
use ck8s_policy_runtime::{
    Decision, LoadedPolicy, Mode, OnError, PolicyConfig, PolicySet, PolicySources, Runtime,
    SettingsFile, Subject, admission,
};
use clap::Args;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Suite files, or directories searched recursively for `*.ck8s-test.yaml` (default: `.`).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    policy: String,
    #[serde(default)]
    settings: Map<String, Value>,
    mode: Option<Mode>,
    cases: Vec<Case>,
}

/// What a suite tests.
enum UnderTest {
    Wasm(Arc<LoadedPolicy>),
    /// A file of ValidatingAdmissionPolicies: its bindings give the modes, so one set serves
    /// every case.
    Vap(PolicySet),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    operation: Option<Operation>,
    resource: Option<Value>,
    file: Option<PathBuf>,
    review: Option<Value>,
    #[serde(default)]
    settings: Map<String, Value>,
    mode: Option<Mode>,
    expect: Outcome,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    hidden: Vec<String>,
}

/// What the webhook would do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    /// Allowed, nothing to say.
    Allow,
    /// Rejected.
    Deny,
    /// Allowed with warnings.
    Warn,
    /// Allowed, with audit findings only.
    Audit,
}

impl Outcome {
    fn of(d: &Decision) -> Self {
        if !d.allowed {
            Outcome::Deny
        } else if !d.warnings.is_empty() {
            Outcome::Warn
        } else if !d.audits.is_empty() {
            Outcome::Audit
        } else {
            Outcome::Allow
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Warn => "warn",
            Outcome::Audit => "audit",
        })
    }
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    errors: usize,
}

pub fn run(args: TestArgs) -> Result<crate::report::Outcome, Failure> {
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut suites = Vec::new();
    for root in &roots {
        if root.is_dir() {
            find_suites(root, &mut suites).map_err(Failure::usage)?;
        } else if root.is_file() {
            suites.push(root.clone());
        } else {
            return Err(Failure::usage(format!(
                "{}: no such file or directory",
                root.display()
            )));
        }
    }
    if suites.is_empty() {
        let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(Failure::usage(format!(
            "no test suites (*.ck8s-test.yaml) under {}",
            shown.join(", ")
        ))
        .with_help("see policies/README.md, \"Testing\", for the suite format"));
    }

    let runtime = runtime()?;
    let mut tally = Tally::default();
    // The suites' and cases' lines, then the tally: what the command shows.
    let mut transcript = String::new();
    let mut suite_errors = Vec::new();
    for path in &suites {
        if let Err(e) = run_suite(&runtime, path, &mut tally, &mut transcript) {
            let message = format!("{}: {}", path.display(), e.message);
            suite_errors.push(Failure { message, ..e });
            tally.errors += 1;
        }
    }
    let Tally {
        passed,
        failed,
        errors,
    } = tally;
    transcript.push_str(&format!("\n{passed} passed, {failed} failed\n"));
    if errors > 0 {
        return Ok(crate::report::Outcome::Unfinished {
            shown: transcript,
            errors: suite_errors,
            failure: Failure::usage(format!("{errors} suite(s) or case(s) could not run")),
        });
    }
    let report = Report::structured("policy test", Verdict::pass_if(failed == 0), &Value::Null);
    Ok(crate::report::Outcome::text(report, transcript))
}

/// `*.ck8s-test.yaml|yml` under `dir`, skipping `target/` and hidden directories.
fn find_suites(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                find_suites(&path, out)?;
            }
        } else if name.ends_with(".ck8s-test.yaml") || name.ends_with(".ck8s-test.yml") {
            out.push(path);
        }
    }
    Ok(())
}

fn run_suite(
    runtime: &Runtime,
    path: &Path,
    tally: &mut Tally,
    transcript: &mut String,
) -> Result<(), Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("cannot read: {e}")))?;
    let suite: Suite = serde_saphyr::from_str(&text)
        .map_err(|e| Failure::usage(format!("not a test suite: {}", e.without_snippet())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (under, source) = if is_vap_file(&suite.policy) {
        let file = base.join(&suite.policy);
        let set = PolicySet::build(runtime, &PolicySources::new().vap_file(&file))
            .map_err(|e| Failure::usage(e.to_string()))?;
        if set.is_empty() {
            return Err(Failure::usage(format!(
                "{} holds no ValidatingAdmissionPolicy",
                file.display()
            )));
        }
        (UnderTest::Vap(set), file.display().to_string())
    } else {
        let policy = Arc::new(load_ref(runtime, &suite.policy, base)?);
        let source = policy.source.to_string();
        (UnderTest::Wasm(policy), source)
    };
    transcript.push_str(&format!(
        "running {} case{} from {} ({source})\n",
        suite.cases.len(),
        if suite.cases.len() == 1 { "" } else { "s" },
        path.display(),
    ));
    for case in &suite.cases {
        match run_case(&under, &suite, case, base) {
            Ok(problems) if problems.is_empty() => {
                transcript.push_str(&format!("case {} ... ok\n", case.name));
                tally.passed += 1;
            }
            Ok(problems) => {
                transcript.push_str(&format!("case {} ... FAILED\n", case.name));
                for line in problems {
                    transcript.push_str(&format!("    {line}\n"));
                }
                tally.failed += 1;
            }
            Err(e) => {
                transcript.push_str(&format!("case {} ... ERROR\n    {e}\n", case.name));
                tally.errors += 1;
            }
        }
    }
    Ok(())
}

/// Runs one case; `Ok(problems)` lists every way the result differs from the expectation.
fn run_case(
    under: &UnderTest,
    suite: &Suite,
    case: &Case,
    base: &Path,
) -> Result<Vec<String>, String> {
    let configured;
    let set = match under {
        UnderTest::Vap(set) => {
            if suite.mode.is_some() || case.mode.is_some() {
                return Err("`mode` is not for a ValidatingAdmissionPolicy: its binding's validationActions say it".into());
            }
            if !suite.settings.is_empty() || !case.settings.is_empty() {
                return Err(
                    "`settings` are not for a ValidatingAdmissionPolicy: give params beside it"
                        .into(),
                );
            }
            set
        }
        UnderTest::Wasm(policy) => {
            let mut settings = suite.settings.clone();
            settings.extend(case.settings.clone());
            let config = PolicyConfig {
                mode: case.mode.or(suite.mode).unwrap_or_default(),
                on_error: OnError::Fail,
                settings,
                ..PolicyConfig::default()
            };
            let file = SettingsFile {
                policies: [(policy.name().to_string(), config)].into_iter().collect(),
                ..SettingsFile::default()
            };
            configured = PolicySet::new(vec![policy.clone()], &file).map_err(|e| e.to_string())?;
            &configured
        }
    };
    let operation = case.operation.unwrap_or(Operation::Create);

    let decision = match (&case.resource, &case.file, &case.review) {
        (Some(resource), None, None) => {
            let raw = serde_json::value::to_raw_value(resource).map_err(|e| e.to_string())?;
            let subject =
                Subject::from_manifest(&raw, operation).map_err(|e| format!("resource: {e}"))?;
            Decision::from_evaluation(&set.evaluate(&subject))
        }
        (None, Some(file), None) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut objects = manifests::parse(&path.display().to_string(), &text)?;
            if objects.len() != 1 {
                return Err(format!(
                    "{}: holds {} objects, a case judges exactly one",
                    path.display(),
                    objects.len()
                ));
            }
            let m = objects.remove(0);
            let subject = Subject::from_manifest(&m.object, operation)
                .map_err(|e| format!("{}: {e}", m.origin))?;
            Decision::from_evaluation(&set.evaluate(&subject))
        }
        (None, None, Some(review)) => {
            let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
            let request = admission::parse_review(&body).map_err(|e| format!("review: {e}"))?;
            Decision::from_evaluation(&set.evaluate(&Subject::from_admission(&request)))
        }
        _ => return Err("a case needs exactly one of `resource`, `file` or `review`".to_string()),
    };

    let got = Outcome::of(&decision);
    let findings: Vec<(String, String)> = effects(&decision)
        .map(|(effect, f)| {
            let f = FindingText::of(effect, f);
            let (policy, message) = (&f.policy, f.message_and_value());
            let mut line = format!("[{effect}] {policy}: {}: {message}", f.path);
            if !f.fix.is_empty() {
                line.push_str(&format!("; fix: {}", f.fix));
            }
            (f.path, line)
        })
        .collect();

    let mut problems = Vec::new();
    if got != case.expect {
        problems.push(format!("expected: {}", case.expect));
        problems.push(format!("     got: {got}"));
    }
    for m in &case.messages {
        if !findings.iter().any(|(_, line)| line.contains(m.as_str())) {
            problems.push(format!("missing message: {m:?}"));
        }
    }
    for p in &case.paths {
        if !findings.iter().any(|(path, _)| path == p) {
            problems.push(format!("missing path: {p}"));
        }
    }
    for h in &case.hidden {
        if findings.iter().any(|(_, line)| line.contains(h.as_str())) {
            problems.push(format!("shown but must be hidden: {h:?}"));
        }
    }
    if !problems.is_empty() {
        if findings.is_empty() {
            problems.push("findings: none".to_string());
        } else {
            problems.push("findings:".to_string());
            problems.extend(findings.into_iter().map(|(_, line)| format!("  {line}")));
        }
    }
    Ok(problems)
}

//! Reading manifests the way `kubectl apply -f` does: files, directories (recursive,
//! `*.yaml`, `*.yml`, `*.json`), `-` for stdin, multi-document YAML, `kind: List` flattened.
//!
//! Every object keeps where it came from (file and 1-based document index), so a finding
//! and an error both say exactly which document to open.

use serde_json::Value;
use serde_json::value::RawValue;
use serde_saphyr::Spanned;
use serde_saphyr::granit_parser::{Event, Parser};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One object read from a manifest, as raw JSON for [`ck8s_policy_runtime::Subject`].
pub struct Manifest {
    pub origin: Origin,
    pub object: Box<RawValue>,
}

/// Where an object was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The path as given (or found under a directory); `-` for stdin.
    pub file: String,
    /// 1-based document index within the file.
    pub document: usize,
    /// 1-based index within a `kind: List`.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// The files `-f` names: a file as is, a directory's manifests recursively and sorted.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            out.push(input.clone());
        } else if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            out.extend(found);
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(format!("{}: no such file or directory", input.display()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every object of every file; the first unreadable file or invalid document fails.
pub fn read_all(files: &[PathBuf]) -> Result<Vec<Manifest>, String> {
    let mut out = Vec::new();
    for file in files {
        let (name, text) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("-: cannot read stdin: {e}"))?;
            ("-".to_string(), text)
        } else {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            (file.display().to_string(), text)
        };
        out.extend(parse(&name, &text)?);
    }
    Ok(out)
}

/// Parses one file's text: YAML documents (JSON is YAML), empty documents skipped.
pub fn parse(file: &str, text: &str) -> Result<Vec<Manifest>, String> {
    // serde-saphyr skips empty documents; the lines the parser starts documents on number them.
    let starts: Vec<u64> = Parser::new_from_str(text)
        .map_while(Result::ok)
        .filter(|(e, _)| matches!(e, Event::DocumentStart(..)))
        .map(|(_, span)| span.start.line() as u64)
        .collect();
    let origin = |line: u64| Origin {
        file: file.to_string(),
        document: starts.partition_point(|&s| s <= line).max(1),
        item: None,
    };
    let docs: Vec<Spanned<Value>> = serde_saphyr::from_multiple(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        format!("{}: invalid YAML: {}", origin(line), e.without_snippet())
    })?;
    let mut out = Vec::new();
    for Spanned {
        value, referenced, ..
    } in docs
    {
        let origin = origin(referenced.line());
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            other => {
                return Err(format!(
                    "{origin}: not a Kubernetes object (a {})",
                    type_name(&other)
                ));
            }
        }
        if value["kind"] == "List" && value.get("items").is_some() {
            let Some(items) = value["items"].as_array() else {
                return Err(format!("{origin}: `items` of a List must be a list"));
            };
            for (j, item) in items.iter().enumerate() {
                let origin = Origin {
                    item: Some(j + 1),
                    ..origin.clone()
                };
                out.push(object(origin, item)?);
            }
        } else {
            out.push(object(origin, &value)?);
        }
    }
    Ok(out)
}

fn object(origin: Origin, value: &Value) -> Result<Manifest, String> {
    for field in ["apiVersion", "kind"] {
        if value[field].as_str().is_none_or(|s| s.is_empty()) {
            return Err(format!("{origin}: not a Kubernetes object: no {field}"));
        }
    }
    let object = serde_json::value::to_raw_value(value).map_err(|e| format!("{origin}: {e}"))?;
    Ok(Manifest { origin, object })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_keep_their_origin() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n- {apiVersion: v1, kind: Pod, metadata: {name: c}}\n";
        let got = parse("m.yaml", text).unwrap();
        let origins: Vec<String> = got.iter().map(|m| m.origin.to_string()).collect();
        assert_eq!(
            origins,
            [
                "m.yaml: document 1",
                "m.yaml: document 3, item 1",
                "m.yaml: document 3, item 2"
            ]
        );
    }

    #[test]
    fn invalid_yaml_names_file_and_document() {
        let text = "apiVersion: v1\nkind: ConfigMap\n---\nkind: [unclosed\n";
        let err = parse("bad.yaml", text).err().unwrap();
        assert!(
            err.starts_with("bad.yaml: document 2: invalid YAML"),
            "{err}"
        );
        let err = parse("x.yaml", "metadata: {name: a}\n").err().unwrap();
        assert_eq!(
            err,
            "x.yaml: document 1: not a Kubernetes object: no apiVersion"
        );
    }
}

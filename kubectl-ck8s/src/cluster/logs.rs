//! Pod logs read line by line from kube's `log_stream` (never buffered whole), per
//! container, current or `--previous`, with the server's timestamps.

use futures::{AsyncBufReadExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use serde::Serialize;

/// One container's log: `pod/container`, current or previous instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Source {
    pub pod: String,
    pub container: String,
    /// The log of the previous (restarted) instance, as `kubectl logs --previous`.
    pub previous: bool,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod/{} -c {}", self.pod, self.container)?;
        if self.previous {
            write!(f, " --previous")?;
        }
        Ok(())
    }
}

/// Splits `kubectl logs --timestamps` line into its time and text.
pub fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    match line.split_once(' ').map(|(ts, rest)| (ts.parse(), rest)) {
        Some((Ok(t), rest)) => (Some(t), rest),
        _ => (None, line),
    }
}

/// How much of a log to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub since_seconds: Option<i64>,
    pub tail_lines: Option<i64>,
}

/// Reads `source` line by line, handing each line (time, text) to `each`; returns the number
/// of lines read.
pub async fn for_each_line(
    pods: &Api<Pod>,
    source: &Source,
    range: Range,
    mut each: impl FnMut(Option<Timestamp>, &str),
) -> Result<usize, kube::Error> {
    let lp = LogParams {
        container: Some(source.container.clone()),
        previous: source.previous,
        since_seconds: range.since_seconds,
        tail_lines: range.tail_lines,
        timestamps: true,
        ..Default::default()
    };
    let reader = pods.log_stream(&source.pod, &lp).await?;
    let mut lines = std::pin::pin!(reader.lines());
    let mut n = 0;
    while let Some(line) = lines.try_next().await.map_err(kube::Error::ReadEvents)? {
        if line.trim().is_empty() {
            continue;
        }
        let (time, text) = split_timestamp(&line);
        each(time, text);
        n += 1;
    }
    Ok(n)
}

/// The names of every container of a pod, init containers first (as `--all-containers`).
pub fn containers(p: &Pod) -> Vec<String> {
    p.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.name.clone())
        .collect()
}

/// The containers whose previous instance ended at or after `since` (they restarted inside
/// the window, so `--previous` holds lines of it).
pub fn restarted_since(p: &Pod, since: Timestamp) -> Vec<String> {
    p.status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter(|c| c.restart_count > 0)
        .filter(|c| {
            c.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .and_then(|t| t.finished_at.as_ref())
                .map(|t| t.0)
                .is_some_and(|t| t >= since)
        })
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_split() {
        let (t, text) = split_timestamp("2026-02-26T10:00:00.123456789Z MANIFEST_UNKNOWN x");
        assert!(t.is_some());
        assert_eq!(text, "MANIFEST_UNKNOWN x");
        assert_eq!(split_timestamp("plain line"), (None, "plain line"));
    }

    #[test]
    fn containers_and_restarts() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "wait-db"}], "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"containerStatuses": [
                {"name": "app", "restartCount": 2, "ready": true, "image": "", "imageID": "",
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-02-26T10:00:00Z"}}},
                {"name": "sidecar", "restartCount": 1, "ready": true, "image": "", "imageID": "",
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-02-25T10:00:00Z"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(containers(&pod), ["wait-db", "app", "sidecar"]);
        let since = "2026-02-26T09:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(restarted_since(&pod, since), ["app"]);
    }
}

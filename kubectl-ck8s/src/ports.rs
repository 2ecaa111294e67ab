//! `kubectl ck8s ports HOST`: only 22, 80 and 443 may be reachable from outside.

use crate::exit::Failure;
use crate::output::progress;
use crate::report::{Check, Outcome, Report};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct PortsArgs {
    /// Host to check (default: --domain / CODEXK8S_PRODUCTION_DOMAIN).
    pub host: Option<String>,
    /// Ports that must be open.
    #[arg(long, value_delimiter = ',', default_value = "22,80,443")]
    pub open: Vec<u16>,
    /// Ports that must be closed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "6443,5000,10250,10254,8443"
    )]
    pub closed: Vec<u16>,
    /// Per-port connect timeout.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The verdict on one port: pure.
pub fn judge(port: u16, want_open: bool, is_open: bool) -> Check {
    let id = format!("port.{port}");
    let state = if is_open { "open" } else { "closed" };
    match (want_open, is_open) {
        (true, true) | (false, false) => Check::pass(id, format!("{port} {state}")),
        (true, false) => Check::fail(id, format!("{port} closed, must be open")).remedy("only 22, 80, 443 are reachable from outside: check the host firewall and the ingress/ssh services"),
        (false, true) => Check::fail(id, format!("{port} open, must be closed")).remedy("production exposes only 22, 80, 443: close this port in the host firewall"),
    }
}

pub async fn is_open(host: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

pub async fn run(args: PortsArgs, domain: Option<String>) -> Result<Outcome, Failure> {
    let host = args.host.or(domain).ok_or_else(|| {
        Failure::usage("no host given")
            .with_help("kubectl ck8s ports HOST, or set --domain / CODEXK8S_PRODUCTION_DOMAIN")
    })?;
    let _progress = progress(&format!("ports: probing {host}"));
    let (host, timeout) = (host.as_str(), args.timeout);
    let open = args.open.iter().map(|&port| (port, true));
    let plan = open.chain(args.closed.iter().map(|&port| (port, false)));
    let probes = plan
        .map(|(port, want)| async move { judge(port, want, is_open(host, port, timeout).await) });
    let checks = futures::future::join_all(probes).await;
    Ok(Outcome::checks(Report::for_host("ports", host, checks)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn port_verdicts() {
        for (port, want_open, open, status) in [
            (443, true, true, Status::Pass),
            (443, true, false, Status::Fail),
            (6443, false, false, Status::Pass),
            (6443, false, true, Status::Fail),
        ] {
            assert_eq!(
                judge(port, want_open, open).status,
                status,
                "{port} want_open={want_open} open={open}"
            );
        }
    }

    #[tokio::test]
    async fn open_and_closed_local_ports() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(is_open("127.0.0.1", port, Duration::from_secs(3)).await);
        drop(l);
        assert!(!is_open("127.0.0.1", port, Duration::from_secs(3)).await);
    }
}

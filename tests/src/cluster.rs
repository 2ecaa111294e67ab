//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (fake nodes that act as kubelets), built from the pinned Go modules in
//! `tests/cluster/` and started once per test binary.
//!
//! What it gives a test:
//! - the real API server (authentication by token, `Node,RBAC` authorization, an audit log with
//!   the admission annotations, admission webhooks called over real TLS);
//! - the real controllers (Deployments roll out ReplicaSets and pods, Jobs complete, CronJobs);
//! - pods scheduled onto kwok nodes and Running; `pods/log` served from files and port-forward
//!   to local listeners, through the API server, by kwok's `Logs` / `PortForward` objects.
//!
//! Every process is started from one supervisor thread that lives as long as the test binary,
//! with `PR_SET_PDEATHSIG`: when the test process exits, panics or is killed, the kernel kills
//! the control plane with it. An `atexit` hook also stops them and removes the data directory.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The pinned component versions (tests/cluster/*/go.mod), for messages and BENCHMARKS.
pub const KUBERNETES_VERSION: &str = "v1.34.4";

/// Token users of the API server. `admin` is in `system:masters`; the `user-*` ones have no
/// rights until a test binds a role to them (RBAC tests).
pub const PLUGIN_USERS: &[&str] = &[
    "user-sre",
    "user-operator",
    "user-reader",
    "user-nobody",
    "user-nolog",
    "user-nojobs",
    "user-nons",
];

/// Names of the fake nodes kwok manages.
pub const NODES: &[&str] = &["kwok-node-0", "kwok-node-1"];

pub struct ControlPlane {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub dir: PathBuf,
    pub ca_pem: String,
    /// Where the API server writes its audit log (JSON lines).
    pub audit_log: PathBuf,
    bin: PathBuf,
    kubectl: PathBuf,
    supervisor: Mutex<mpsc::Sender<Request>>,
}

enum Request {
    Spawn(Box<Command>, mpsc::Sender<std::io::Result<u32>>),
    Kill(u32, mpsc::Sender<()>),
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        // Started on a thread of its own: the caller may be inside a tokio runtime.
        SHARED.get_or_init(|| match std::thread::spawn(ControlPlane::start).join() {
            Ok(Ok(cp)) => cp,
            Ok(Err(e)) => {
                stop_all();
                panic!("cannot start the test control plane: {e:#}")
            }
            Err(_) => {
                stop_all();
                panic!("the test control plane's start panicked")
            }
        })
    }

    fn start() -> anyhow::Result<ControlPlane> {
        let bin = build_components()?;
        let kubectl = find_kubectl()?;
        let dir = tempfile::Builder::new()
            .prefix("ck8s-control-plane-")
            .tempdir()?
            .keep();
        let _ = DATA_DIR.set(dir.clone());
        // SAFETY: registering a plain `extern "C" fn` with atexit.
        unsafe { libc::atexit(at_exit) };
        let supervisor = spawn_supervisor();

        // Certificates: one CA for the API server's serving certificate and kwok's (the API
        // server verifies the "kubelet" it streams logs and port-forwards from).
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ck8s-test-ca");
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |names: &[&str]| -> anyhow::Result<(String, String)> {
            let key = rcgen::KeyPair::generate()?;
            let params = rcgen::CertificateParams::new(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )?;
            Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
        };
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
        write("ca.crt", &ca_pem)?;
        let (c, k) = leaf(&[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default.svc",
        ])?;
        write("apiserver.crt", &c)?;
        write("apiserver.key", &k)?;
        let (c, k) = leaf(&["127.0.0.1", "localhost"])?;
        write("kwok.crt", &c)?;
        write("kwok.key", &k)?;
        let sa_key = rcgen::KeyPair::generate()?;
        write("service-account.key", &sa_key.serialize_pem())?;
        write("service-account.pub", &sa_key.public_key_pem())?;
        let mut tokens = String::from("admin-token,admin,admin,\"system:masters\"\n");
        for user in PLUGIN_USERS {
            tokens.push_str(&format!("{user}-token,{user},{user}\n"));
        }
        write("tokens.csv", &tokens)?;
        // Metadata level records every request with its admission annotations
        // (`validation.policy.admission.k8s.io/...`, the webhook's audit annotations).
        write(
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n- level: Metadata\n",
        )?;

        let (spawn_bin, spawn_to) = (bin.clone(), supervisor.clone());
        let spawn = |name: &str, args: Vec<String>| -> anyhow::Result<u32> {
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let mut cmd = Command::new(spawn_bin.join(name));
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .env_remove("HTTPS_PROXY")
                .env_remove("HTTP_PROXY")
                .env_remove("https_proxy")
                .env_remove("http_proxy");
            let (tx, rx) = mpsc::channel();
            spawn_to
                .send(Request::Spawn(Box::new(cmd), tx))
                .map_err(|_| anyhow::anyhow!("supervisor gone"))?;
            Ok(rx.recv()??)
        };

        // etcd
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        spawn(
            "etcd",
            vec![
                "--name=ck8s".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=ck8s=http://127.0.0.1:{etcd_peer}"),
                // a test cluster: durability across power loss is not worth the fsyncs
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        wait_http(
            &format!("127.0.0.1:{etcd_client}"),
            "/health",
            Duration::from_secs(60),
        )
        .map_err(|e| anyhow::anyhow!("etcd: {e}; log: {}", tail(&dir.join("etcd.log"))))?;

        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let cp = ControlPlane {
            server,
            dir: dir.clone(),
            ca_pem,
            audit_log: dir.join("audit.log"),
            bin,
            kubectl,
            supervisor: Mutex::new(supervisor),
        };
        let p = |f: &str| dir.join(f).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-key-file={}", p("service-account.pub")),
            format!(
                "--service-account-signing-key-file={}",
                p("service-account.key")
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=1".into(),
        ];
        std::fs::write(dir.join("apiserver.args"), apiserver_args.join("\n"))?;
        let pid = spawn("kube-apiserver", apiserver_args)?;
        cp.wait_ready(Duration::from_secs(120))
            .map_err(|e| anyhow::anyhow!("{e}; log: {}", tail(&dir.join("kube-apiserver.log"))))?;
        std::fs::write(dir.join("kube-apiserver.pid"), pid.to_string())?;

        let admin = cp.write_kubeconfig("admin")?;
        let admin = admin.display().to_string();
        spawn(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                // Leader election on, as in production (a Lease in kube-system renewed every
                // 2 s): the webhook tests check it keeps flowing while ck8s-admission is down.
                // A longer lease than the default 15 s rides out the API server restarts of
                // real_restart.rs (the controller manager exits when it loses the lease).
                "--leader-elect=true".into(),
                "--leader-elect-lease-duration=120s".into(),
                "--leader-elect-renew-deadline=100s".into(),
                "--leader-elect-retry-period=2s".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--root-ca-file={}", p("ca.crt")),
                format!(
                    "--service-account-private-key-file={}",
                    p("service-account.key")
                ),
                // as kubeadm runs it: each controller under its own ServiceAccount
                // (system:serviceaccount:kube-system:deployment-controller, ...), which is who
                // the webhook sees writing ReplicaSets and Pods
                "--use-service-account-credentials=true".into(),
                "--controllers=*".into(),
                // fast enough for tests: a finished Job's pods and objects are deleted promptly
                "--concurrent-gc-syncs=5".into(),
                // kwok renews node leases every 10 s; on a loaded machine, or across an API
                // server restart (real_restart.rs), a lease can lapse past the default 50 s.
                // The node controller then marks every pod NotReady, which kwok never undoes
                // (its pod-ready stage runs once), and rollouts hang. No test loses a node.
                "--node-monitor-grace-period=10m".into(),
                "--v=1".into(),
            ],
        )?;
        spawn(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=1".into(),
            ],
        )?;
        let kwok_port = free_port()?;
        spawn(
            "kwok",
            vec![
                format!("--kubeconfig={admin}"),
                "--manage-all-nodes=true".into(),
                "--node-ip=127.0.0.1".into(),
                format!("--node-port={kwok_port}"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                format!("--tls-cert-file={}", p("kwok.crt")),
                format!("--tls-private-key-file={}", p("kwok.key")),
                "--enable-crds=Logs,ClusterLogs,PortForward,ClusterPortForward".into(),
                // Node heartbeats as a kubelet sends them: a Lease per node in
                // kube-node-lease, renewed every quarter of its duration (10 s).
                "--node-lease-duration-seconds=40".into(),
            ],
        )?;
        for node in NODES {
            cp.apply(&node_manifest(node))?;
        }
        cp.wait_until(Duration::from_secs(120), "nodes Ready", || {
            let out = cp.kubectl_output(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ])?;
            Ok(out.lines().filter(|l| *l == "True").count() == NODES.len())
        })?;
        // kwok's Logs / PortForward CRDs (shipped by build.sh beside the binaries).
        let crds = cp.bin.parent().expect("bin has a parent").join("crds");
        cp.kubectl_output(&[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().expect("utf-8 path"),
        ])?;
        cp.wait_established(&[
            "logs.kwok.x-k8s.io",
            "clusterlogs.kwok.x-k8s.io",
            "portforwards.kwok.x-k8s.io",
            "clusterportforwards.kwok.x-k8s.io",
        ])?;
        // The ServiceAccount admission plugin refuses pods until the controller manager has
        // created the namespace's `default` ServiceAccount. Its first start (leader election,
        // every informer's first list) took over 60 s once, with the suite's other binaries
        // building and running beside it on two cores: a longer bound, and its log if even
        // that is not enough.
        cp.wait_until(Duration::from_secs(180), "default ServiceAccount", || {
            Ok(cp
                .kubectl_output(&[
                    "-n",
                    "default",
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "name",
                ])
                .is_ok())
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", cp.log_tail("kube-controller-manager")))?;
        Ok(cp)
    }

    /// `/readyz` answers `ok` with the admin token.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.server.trim_start_matches("https://");
        wait_https(addr, "/readyz", &self.ca_pem, "admin-token", timeout)
    }

    /// Writes (once) and returns a kubeconfig for a token user: `admin` or one of
    /// [`PLUGIN_USERS`]. The context is named after the user; the namespace is `default`.
    pub fn write_kubeconfig(&self, user: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{user}.kubeconfig"));
        if !path.exists() {
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: ck8s-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {user}-token\ncontexts:\n- name: {user}\n  context:\n    cluster: ck8s-test\n    user: {user}\n    namespace: default\ncurrent-context: {user}\n",
                server = self.server,
                ca = self.dir.join("ca.crt").display(),
            );
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.write_kubeconfig("admin")
            .expect("the admin kubeconfig is written at start")
    }

    /// The real kubectl (within one minor version of the API server), as admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig().display()));
        cmd
    }

    /// Path of the kubectl binary the tests use.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// Where the component binaries are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Runs kubectl as admin; stdout on success, an error with stderr otherwise.
    pub fn kubectl_output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl().args(args).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Waits until each CRD is Established (60 s). Polled: `kubectl wait --for=condition=...`
    /// fails at once ("status.conditions accessor error") when it reads a CRD before the API
    /// server has written any condition.
    pub fn wait_established(&self, crds: &[&str]) -> anyhow::Result<()> {
        let names: Vec<String> = crds.iter().map(|c| format!("crd/{c}")).collect();
        let mut args = vec!["get"];
        args.extend(names.iter().map(String::as_str));
        args.extend([
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Established\")].status}{\"\\n\"}{end}",
        ]);
        self.wait_until(
            Duration::from_secs(60),
            &format!("{} Established", crds.join(", ")),
            || {
                let out = self.kubectl_output(&args)?;
                Ok(out.lines().filter(|l| *l == "True").count() == crds.len())
            },
        )
    }

    /// `kubectl apply --server-side -f -` of a manifest (YAML or JSON, one or more documents).
    pub fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        self.kubectl_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            manifest,
        )
    }

    /// Runs kubectl as admin with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Polls `check` until it says true, or fails after `timeout` naming `what`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            match check() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}; last error: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The Running, not terminating pods of `namespace` that match the label `selector`, with
    /// their creation times (what "every running pod started after the patch" is judged on).
    pub fn running_pods(
        &self,
        namespace: &str,
        selector: &str,
    ) -> anyhow::Result<Vec<(String, jiff::Timestamp)>> {
        let pods: serde_json::Value =
            serde_json::from_str(&self.kubectl_output(&[
                "-n", namespace, "get", "pods", "-l", selector, "-o", "json",
            ])?)?;
        let mut running = Vec::new();
        for p in pods["items"].as_array().into_iter().flatten() {
            if p["status"]["phase"] != "Running" || !p["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let created = p["metadata"]["creationTimestamp"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("pod {name} has no creationTimestamp"))?
                .parse()?;
            running.push((name, created));
        }
        Ok(running)
    }

    /// A fresh namespace for one test, `ck8s-<prefix>-<n>`, with its `default` ServiceAccount.
    pub fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        self.kubectl_output(&["create", "namespace", &name])?;
        self.wait_until(Duration::from_secs(60), "default ServiceAccount", || {
            Ok(self
                .kubectl_output(&[
                    "-n",
                    &name,
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "name",
                ])
                .is_ok())
        })?;
        Ok(name)
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL) for good: what a client sees when the API
    /// server is gone. The rest of the control plane keeps running until the binary exits.
    pub fn stop_apiserver(&self) -> anyhow::Result<()> {
        let pid: u32 = std::fs::read_to_string(self.dir.join("kube-apiserver.pid"))?
            .trim()
            .parse()?;
        let (tx, rx) = mpsc::channel();
        self.supervisor
            .lock()
            .unwrap()
            .send(Request::Kill(pid, tx))
            .map_err(|_| anyhow::anyhow!("supervisor gone"))?;
        rx.recv()?;
        Ok(())
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL), waits `down`, and starts it again with
    /// the same flags; returns once it is ready and the controller manager acts again.
    /// Watches and clients see a real outage.
    pub fn restart_apiserver(&self, down: Duration) -> anyhow::Result<()> {
        self.stop_apiserver()?;
        std::thread::sleep(down);
        let args: Vec<String> = std::fs::read_to_string(self.dir.join("apiserver.args"))?
            .lines()
            .map(String::from)
            .collect();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))?;
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // As at start: the API server reaches kwok and the webhooks directly, never by a proxy.
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            cmd.env_remove(var);
        }
        let (tx, rx) = mpsc::channel();
        self.supervisor
            .lock()
            .unwrap()
            .send(Request::Spawn(Box::new(cmd), tx))
            .map_err(|_| anyhow::anyhow!("supervisor gone"))?;
        let pid = rx.recv()??;
        std::fs::write(self.dir.join("kube-apiserver.pid"), pid.to_string())?;
        self.wait_ready(Duration::from_secs(120))?;
        // Ready is not enough: the controllers' watches come back on their own backoff (over a
        // minute after a long outage). A new namespace's `default` ServiceAccount shows the
        // controller manager acting again, before a test creates what it must act on.
        let probe = format!("restart-probe-{pid}");
        self.kubectl_output(&["create", "namespace", &probe])?;
        self.wait_until(
            Duration::from_secs(180),
            "the controllers after the API server restart",
            || {
                Ok(self
                    .kubectl_output(&[
                        "-n",
                        &probe,
                        "get",
                        "serviceaccount",
                        "default",
                        "-o",
                        "name",
                    ])
                    .is_ok())
            },
        )?;
        self.kubectl_output(&["delete", "namespace", &probe, "--wait=false"])?;
        Ok(())
    }

    /// The API server's `/metrics` text (admin).
    pub fn metrics(&self) -> anyhow::Result<String> {
        self.kubectl_output(&["get", "--raw", "/metrics"])
    }

    /// The audit log's events (JSON lines) so far.
    pub fn audit_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(&self.audit_log)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Serves `lines` as the log of `container` in the pods of `namespace` (all of them, or
    /// those named in `pods`) by a kwok `ClusterLogs`, and `previous` as their previous
    /// container's log. kwok selects pods by namespace and name only, so container names tell
    /// the Deployments of a namespace apart.
    /// Lines are `(RFC 3339 time, text)`; they are written in the CRI log format kwok reads.
    /// kwok picks a new object up within seconds: use [`ControlPlane::wait_logs`].
    pub fn serve_logs(
        &self,
        name: &str,
        namespace: &str,
        pods: &[&str],
        container: &str,
        lines: &[(String, String)],
        previous: Option<&[(String, String)]>,
    ) -> anyhow::Result<()> {
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let cri = |lines: &[(String, String)]| -> String {
            lines
                .iter()
                .map(|(t, text)| format!("{t} stdout F {text}\n"))
                .collect()
        };
        let current = logs.join(format!("{name}.log"));
        std::fs::write(&current, cri(lines))?;
        let mut spec = serde_json::json!({
            "containers": [container],
            "logsFile": current.display().to_string(),
        });
        if let Some(previous) = previous {
            let file = logs.join(format!("{name}.previous.log"));
            std::fs::write(&file, cri(previous))?;
            spec["previousLogsFile"] = file.display().to_string().into();
        }
        let object = serde_json::json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs",
            "metadata": { "name": name },
            "spec": {
                "selector": selector(namespace, pods),
                "logs": [spec],
            }
        });
        self.apply(&object.to_string())?;
        Ok(())
    }

    /// Forwards port `port` of the pods of `namespace` (all, or those named in `pods`) to the
    /// local listener `target` (kwok `ClusterPortForward`): what `kubectl port-forward` and
    /// kube's port-forward reach through the API server.
    pub fn serve_port(
        &self,
        name: &str,
        namespace: &str,
        pods: &[&str],
        port: u16,
        target: std::net::SocketAddr,
    ) -> anyhow::Result<()> {
        let object = serde_json::json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterPortForward",
            "metadata": { "name": name },
            "spec": {
                "selector": selector(namespace, pods),
                "forwards": [{ "ports": [port], "target": { "address": target.ip().to_string(), "port": target.port() } }],
            }
        });
        self.apply(&object.to_string())?;
        Ok(())
    }

    /// Forwards the ports smoke probes, codex-k8s's 8080 and oauth2-proxy's 4180, in the
    /// production namespace `namespace` to `target` (a [`codex_app`]).
    pub fn serve_app_ports(
        &self,
        namespace: &str,
        target: std::net::SocketAddr,
    ) -> anyhow::Result<()> {
        for (deployment, port) in [("codex-k8s", 8080), ("oauth2-proxy", 4180)] {
            self.serve_port(
                &format!("{namespace}-{deployment}"),
                namespace,
                &[],
                port,
                target,
            )?;
        }
        Ok(())
    }

    /// Waits until `kubectl logs` of `pod`'s `container` answers (kwok has seen the Logs
    /// object).
    pub fn wait_logs(&self, namespace: &str, pod: &str, container: &str) -> anyhow::Result<()> {
        self.wait_until(Duration::from_secs(60), "kwok serving the logs", || {
            Ok(self
                .kubectl_output(&["-n", namespace, "logs", pod, "-c", container, "--tail=1"])
                .is_ok())
        })
    }

    /// The platform's namespaces, `codex-k8s-prod` and `codex-k8s-system`, as a codex-k8s
    /// cluster has them, and ck8s-admission's `ck8s-system` (deploy/rbac's Roles live there).
    pub fn platform_namespaces(&self) -> anyhow::Result<()> {
        self.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: codex-k8s-prod}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: codex-k8s-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ck8s-system}\n",
        )?;
        Ok(())
    }

    /// The last lines of a component's log, for failure messages.
    pub fn log_tail(&self, component: &str) -> String {
        tail(&self.dir.join(format!("{component}.log")))
    }
}

/// kwok's `ObjectSelector`: a namespace, and pod names when given.
fn selector(namespace: &str, pods: &[&str]) -> serde_json::Value {
    let mut s = serde_json::json!({ "matchNamespaces": [namespace] });
    if !pods.is_empty() {
        s["matchNames"] = pods.into();
    }
    s
}

/// A Node that kwok manages: Ready, with room for many pods, its kubelet endpoint at kwok.
fn node_manifest(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec: {{}}
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "110"}}
"#
    )
}

/// Builds (or finds cached) the components; the bin directory.
fn build_components() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed (exit {:?}): the real-control-plane tests need Go 1.26+ and the Go module proxy; see README.md, \"Tests\"",
            script.display(),
            out.status.code()
        );
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    for b in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ] {
        if !dir.join(b).is_file() {
            anyhow::bail!("{} did not produce {b}", script.display());
        }
    }
    Ok(dir)
}

/// kubectl within one minor version of the API server (v1.34): `$CK8S_KUBECTL`, else
/// `kubectl.1.33`/`kubectl.1.34`/`kubectl.1.35` on PATH or in the Google Cloud SDK's bin.
pub fn find_kubectl() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CK8S_KUBECTL") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/lib/google-cloud-sdk/bin".into());
    for name in ["kubectl.1.34", "kubectl.1.35", "kubectl.1.33"] {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "no kubectl within one minor version of kube-apiserver {KUBERNETES_VERSION}: set CK8S_KUBECTL, or install the Google Cloud SDK's kubectl.1.33"
    )
}

/// A port the kernel just gave out on 127.0.0.1 (closed again, so a process can bind it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The codex-k8s app behind the pods' forwarded ports (see [`ControlPlane::serve_port`]): 200 on
/// the health endpoints, 401 on the GitHub webhook path (oauth2-proxy lets it through to the
/// app, which rejects the bad signature), 404 elsewhere; one request per connection.
pub fn codex_app() -> std::net::SocketAddr {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the app's listener");
    let addr = listener.local_addr().expect("the app's address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let resp = match req.split_whitespace().nth(1).unwrap_or("") {
                    "/healthz" | "/readyz" => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    }
                    "/metrics" => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    }
                    "/api/v1/webhooks/github" => {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    }
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                };
                let _ = s.write_all(resp.as_bytes());
            });
        }
    });
    addr
}

fn spawn_supervisor() -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel::<Request>();
    // This thread never ends while the process lives: PR_SET_PDEATHSIG fires when the thread
    // that forked a child exits, so the children must be forked here.
    std::thread::Builder::new()
        .name("ck8s-control-plane".into())
        .spawn(move || {
            for req in rx {
                match req {
                    Request::Spawn(mut cmd, reply) => {
                        // SAFETY: prctl is async-signal-safe; nothing else runs before exec.
                        unsafe {
                            cmd.pre_exec(|| {
                                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                    return Err(std::io::Error::last_os_error());
                                }
                                Ok(())
                            });
                        }
                        let result = cmd.spawn().map(|child| {
                            let pid = child.id();
                            CHILDREN.lock().unwrap().push(child);
                            pid
                        });
                        let _ = reply.send(result);
                    }
                    Request::Kill(pid, reply) => {
                        let mut children = CHILDREN.lock().unwrap();
                        if let Some(i) = children.iter().position(|c| c.id() == pid) {
                            let mut child = children.remove(i);
                            terminate(&mut child);
                        }
                        let _ = reply.send(());
                    }
                }
            }
        })
        .expect("spawn the control-plane supervisor");
    // Keep the loop alive for the process's life even if every ControlPlane handle is gone.
    static KEEP: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let _ = KEEP.set(Mutex::new(tx.clone()));
    tx
}

/// SIGTERM, up to 10 s for a clean exit, then SIGKILL.
fn terminate(child: &mut Child) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn stop_all() {
    let children: Vec<Child> = match CHILDREN.lock() {
        Ok(mut c) => c.drain(..).collect(),
        Err(p) => p.into_inner().drain(..).collect(),
    };
    // Reverse start order: kwok and the controllers before the API server, etcd last.
    for mut c in children.into_iter().rev() {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(dir) = DATA_DIR.get()
        && std::env::var_os("CK8S_KEEP_CONTROL_PLANE").is_none()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

extern "C" fn at_exit() {
    stop_all();
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Polls `GET path` over plain HTTP until 200.
fn wait_http(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut line = String::new();
            if BufReader::new(&mut s).read_line(&mut line).is_ok() && line.contains(" 200") {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            anyhow::bail!("http://{addr}{path} not healthy after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `GET path` over HTTPS (trusting `ca_pem`, with a bearer token) until it answers 200.
fn wait_https(
    addr: &str,
    path: &str,
    ca_pem: &str,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    // On a thread of its own: callers may be inside a tokio runtime (async tests).
    std::thread::scope(|scope| {
        scope
            .spawn(|| wait_https_blocking(addr, path, ca_pem, token, timeout))
            .join()
            .map_err(|_| anyhow::anyhow!("readiness probe panicked"))?
    })
}

fn wait_https_blocking(
    addr: &str,
    path: &str,
    ca_pem: &str,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("https://{addr}{path}");
    let start = Instant::now();
    let mut last;
    loop {
        let r = rt.block_on(async {
            let resp = client.get(&url).bearer_auth(token).send().await?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, body))
        });
        match r {
            Ok((s, _)) if s.is_success() => return Ok(()),
            Ok((s, body)) => last = format!("{s}: {}", body.chars().take(400).collect::<String>()),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() > timeout {
            anyhow::bail!("{url} not ready after {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fixture cluster of `tests/fixtures/clusters/` applied to the real control plane, with its
/// production namespace renamed so that tests can run side by side.
pub struct AppliedFixture {
    /// The production namespace (the fixture's `codex-k8s-prod`).
    pub namespace: String,
    /// Deployment names of the fixture.
    pub deployments: Vec<String>,
}

impl ControlPlane {
    /// Applies fixture `name` as a real cluster would hold it: what a person or a controller
    /// writes (Namespaces, Deployments, Jobs, CronJobs, ConfigMaps, Secrets, RBAC, bare Pods),
    /// never what only a controller makes (ReplicaSets, Pods of the fixture's Deployments) nor
    /// any `status`, nor a webhook configuration (its Service has no process behind it). `codex-k8s-prod` becomes `namespace`. The fixture's `logs/<ns>/<pod>.log`
    /// are served (kwok `ClusterLogs`) for the pods of the Deployment the pod name starts with.
    /// Returns once every Deployment is rolled out.
    /// [`Self::apply_fixture`] in a test: a fixture that does not apply panics with the
    /// controller manager's log tail.
    pub fn fixture_in(&self, name: &str, namespace: &str) -> AppliedFixture {
        self.apply_fixture(name, namespace).unwrap_or_else(|e| {
            panic!(
                "fixture {name}: {e:#}\n{}",
                self.log_tail("kube-controller-manager")
            )
        })
    }

    pub fn apply_fixture(&self, name: &str, namespace: &str) -> anyhow::Result<AppliedFixture> {
        let (objects, logs) = crate::apiserver::load_fixture(name)?;
        let deployments: Vec<String> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
            .collect();
        let derived = |o: &serde_json::Value| {
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            // A Deployment's pod is `<deployment>-<template hash>-<suffix>`.
            let owner = name.rsplitn(3, '-').nth(2).unwrap_or("");
            match o["kind"].as_str() {
                Some("ReplicaSet" | "Event") => true,
                Some("Pod") => deployments.iter().any(|d| d == owner),
                _ => false,
            }
        };
        // A fixture's webhook configuration names a Service with no process behind it
        // (pods on kwok); registered for real it would fail every judged write. A test that
        // wants the webhook registers ck8s-admission on loopback (`cluster_webhook`).
        let webhook = |o: &serde_json::Value| {
            matches!(
                o["kind"].as_str(),
                Some("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration")
            )
        };
        let mut docs = Vec::new();
        for mut o in objects.into_iter().filter(|o| !derived(o) && !webhook(o)) {
            real_object(&mut o, namespace);
            docs.push(o);
        }
        // Namespaces first, then the rest (kubectl applies a list in order).
        docs.sort_by_key(|o| o["kind"] != "Namespace");
        let mut ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        real_object(&mut ns, namespace);
        docs.insert(0, ns);
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs});
        self.apply(&list.to_string())?;
        for ((ns, pod), text) in &logs {
            let ns = if ns == "codex-k8s-prod" {
                namespace
            } else {
                ns
            };
            let Some(deployment) = deployments
                .iter()
                .filter(|d| pod.starts_with(&format!("{d}-")))
                .max_by_key(|d| d.len())
            else {
                continue;
            };
            let container = docs_container(&list, deployment).unwrap_or_else(|| deployment.clone());
            let lines: Vec<(String, String)> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(t, rest)| (t.to_string(), rest.to_string()))
                .collect();
            self.serve_logs(
                &format!("{ns}-{deployment}"),
                ns,
                &[],
                &container,
                &lines,
                None,
            )?;
        }
        // Each Deployment in its own namespace (a fixture may install into ck8s-system too).
        for o in list["items"].as_array().into_iter().flatten() {
            if o["kind"] != "Deployment" {
                continue;
            }
            let (ns, d) = (
                o["metadata"]["namespace"].as_str().unwrap_or(namespace),
                o["metadata"]["name"].as_str().unwrap_or(""),
            );
            self.kubectl_output(&[
                "-n",
                ns,
                "rollout",
                "status",
                &format!("deploy/{d}"),
                "--timeout=120s",
            ])?;
        }
        Ok(AppliedFixture {
            namespace: namespace.to_string(),
            deployments,
        })
    }
}

/// The first container's name of Deployment `name` in a List.
fn docs_container(list: &serde_json::Value, name: &str) -> Option<String> {
    list["items"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)?["spec"]["template"]
        ["spec"]["containers"][0]["name"]
        .as_str()
        .map(String::from)
}

/// A fixture object as a client would write it: no status or server-set metadata, Jobs
/// without the selector the API server generates, `codex-k8s-prod` renamed.
fn real_object(o: &mut serde_json::Value, namespace: &str) {
    let obj = o.as_object_mut().expect("an object");
    let is_namespace = obj.get("kind").and_then(|k| k.as_str()) == Some("Namespace");
    obj.remove("status");
    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for k in [
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "uid",
            "ownerReferences",
            "managedFields",
        ] {
            meta.remove(k);
        }
        if meta.get("namespace").and_then(|n| n.as_str()) == Some("codex-k8s-prod") {
            meta.insert("namespace".into(), namespace.into());
        }
        if is_namespace && meta.get("name").and_then(|n| n.as_str()) == Some("codex-k8s-prod") {
            meta.insert("name".into(), namespace.into());
        }
    }
    if obj.get("kind").and_then(|k| k.as_str()) == Some("Job")
        && let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.remove("selector");
        if let Some(labels) = spec
            .get_mut("template")
            .and_then(|t| t.get_mut("metadata"))
            .and_then(|m| m.get_mut("labels"))
            .and_then(|l| l.as_object_mut())
        {
            labels.retain(|k, _| {
                k != "job-name" && k != "controller-uid" && !k.starts_with("batch.kubernetes.io/")
            });
        }
    }
}

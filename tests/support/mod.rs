//! Test support for integration tests that need the testbed (tests/testbed/up): `mod support;`
//!
//! Every test that talks to a server starts with `let tb = require_testbed!();`. Without a running
//! testbed such tests return early (loudly), unless GITOPSD_TESTBED_REQUIRED=1, which turns that into
//! a panic (tests/run sets it, so CI cannot pass by skipping).
#![allow(dead_code, unused_macros)]

pub mod gitopsd;
pub mod notify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Values exported by target/testbed/env.sh.
#[derive(Debug)]
pub struct Testbed {
    vars: BTreeMap<String, String>,
    env_file: PathBuf,
}

/// A bare repository served over both git endpoints.
#[derive(Debug, Clone)]
pub struct TestRepo {
    pub name: String,
    pub https_url: String,
    pub ssh_url: String,
}

/// Returns the started testbed, or None after a loud message when target/testbed/env.sh is missing
/// (panics instead if GITOPSD_TESTBED_REQUIRED=1). Parsed once per test binary.
pub fn testbed() -> Option<&'static Testbed> {
    static TESTBED: OnceLock<Option<Testbed>> = OnceLock::new();
    let tb = TESTBED.get_or_init(|| {
        let env_file = env_file_path();
        match std::fs::read_to_string(&env_file) {
            Ok(text) => Some(Testbed {
                vars: parse_env_sh(&text),
                env_file,
            }),
            Err(_) => None,
        }
    });
    if tb.is_none() {
        let msg = format!(
            "\n==================== TESTBED NOT RUNNING ====================\n\
             {} not found: this test needs the servers of the testbed.\n\
             Run `tests/testbed/up` (or `tests/run`) first. Test skipped.\n\
             =============================================================",
            env_file_path().display()
        );
        if std::env::var("GITOPSD_TESTBED_REQUIRED").as_deref() == Ok("1") {
            panic!("{msg}\nGITOPSD_TESTBED_REQUIRED=1: failing instead of skipping");
        }
        eprintln!("{msg}");
    }
    tb.as_ref()
}

/// `let tb = require_testbed!();` — the testbed, or return from the test (see [`testbed`]).
#[macro_export]
macro_rules! require_testbed {
    () => {
        match support::testbed() {
            Some(t) => t,
            None => return,
        }
    };
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_file_path() -> PathBuf {
    match std::env::var_os("GITOPSD_TESTBED_ROOT") {
        Some(root) => PathBuf::from(root).join("env.sh"),
        None => repo_root().join("target/testbed/env.sh"),
    }
}

/// Parses the `export KEY='value'` lines written by tests/testbed/up.
fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

impl Testbed {
    /// Any value exported by env.sh; panics if it is missing.
    pub fn env(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{} does not export {key}", self.env_file.display()))
    }

    /// All exported values, e.g. to pass to a child process.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The sops CLI (GITOPSD_TEST_SOPS). A testbed started before env.sh exported it is
    /// accepted with the variable exported by hand instead.
    pub fn sops(&self) -> PathBuf {
        match self.vars.get("GITOPSD_TEST_SOPS") {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(std::env::var("GITOPSD_TEST_SOPS").unwrap_or_else(|_| {
                panic!(
                    "{} does not export GITOPSD_TEST_SOPS (restart the testbed, or export it)",
                    self.env_file.display()
                )
            })),
        }
    }

    /// Base URL of the testbed's Alertmanager (GITOPSD_TEST_ALERTMANAGER). A testbed started
    /// before env.sh exported it is accepted with the variable exported by hand instead.
    pub fn alertmanager(&self) -> String {
        match self.vars.get("GITOPSD_TEST_ALERTMANAGER") {
            Some(url) => url.clone(),
            None => std::env::var("GITOPSD_TEST_ALERTMANAGER").unwrap_or_else(|_| {
                panic!(
                    "{} does not export GITOPSD_TEST_ALERTMANAGER (restart the testbed, or export it)",
                    self.env_file.display()
                )
            }),
        }
    }

    pub fn root(&self) -> PathBuf {
        PathBuf::from(self.env("GITOPSD_TESTBED_ROOT"))
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        PathBuf::from(self.env("KUBECONFIG"))
    }

    /// A client for the testbed's admin kubeconfig (system:masters, client certificate).
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig_path())
            .expect("read testbed kubeconfig");
        self.kube_client_from(kubeconfig).await
    }

    /// A client that authenticates with a bearer token (e.g. from a TokenRequest), TLS verified against the testbed CA.
    pub async fn kube_client_with_token(&self, token: &str) -> kube::Client {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tb\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: tok\n  user:\n    token: {}\ncontexts:\n- name: tb\n  context:\n    cluster: tb\n    user: tok\n\
             current-context: tb\n",
            self.env("GITOPSD_TEST_KUBE_SERVER"),
            self.env("GITOPSD_TEST_KUBE_CA"),
            token
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("token kubeconfig");
        self.kube_client_from(kubeconfig).await
    }

    async fn kube_client_from(&self, kubeconfig: kube::config::Kubeconfig) -> kube::Client {
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config from testbed kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    fn s3_client_for(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            self.env("AWS_ACCESS_KEY_ID"),
            self.env("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "gitopsd-testbed",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(
                self.env("GITOPSD_TEST_S3_REGION").to_string(),
            ))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Primary S3 server (moto): path-style addressing, static credentials.
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        self.s3_client_for(self.env("GITOPSD_TEST_S3_ENDPOINT"))
    }

    /// Second S3 server (versitygw, posix backend), same credentials.
    pub async fn s3_client_2(&self) -> aws_sdk_s3::Client {
        self.s3_client_for(self.env("GITOPSD_TEST_S3_ENDPOINT_2"))
    }

    /// A new empty bare repository (HEAD -> main) with a unique name, served over HTTPS and SSH.
    pub fn new_repo(&self, prefix: &str) -> TestRepo {
        let name = unique_name(prefix);
        let script = repo_root().join("tests/testbed/new-repo");
        let out = Command::new(&script)
            .arg(&name)
            .env("GITOPSD_TESTBED_ROOT", self.root())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "new-repo {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("new-repo output is UTF-8");
        let mut lines = stdout.lines();
        let https_url = lines.next().expect("https url").to_string();
        let ssh_url = lines.next().expect("ssh url").to_string();
        TestRepo {
            name,
            https_url,
            ssh_url,
        }
    }

    /// Creates a namespace with a unique name and waits until its "default" ServiceAccount exists
    /// (pods cannot be created before that). Returns its name.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "gitopsd.test/testbed": "true" } }
        }))
        .unwrap();
        kube::Api::<Namespace>::all(client.clone())
            .create(&kube::api::PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let sas = kube::Api::<ServiceAccount>::namespaced(client.clone(), &name);
        wait_until(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(30),
            || async { sas.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        name
    }

    /// The testbed's CA for the git HTTPS server.
    pub fn git_ca(&self) -> PathBuf {
        PathBuf::from(self.env("GITOPSD_TEST_GIT_CA"))
    }

    /// Makes libgit2 trust the testbed's git CA. Process-global (libgit2 option), done once; the CA file
    /// replaces the system trust store for all HTTPS use of libgit2 in this test binary.
    pub fn trust_git_ca(&self) {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            // SAFETY: sets a libgit2 global option; called once, before this binary's git2 HTTPS use.
            unsafe {
                git2::opts::set_ssl_cert_file(self.git_ca()).expect("git2 set_ssl_cert_file")
            };
        });
    }

    /// git2 callbacks for the HTTPS endpoint: basic auth with the given password (tried once, so a wrong one
    /// fails instead of looping). Call [`Testbed::trust_git_ca`] first.
    pub fn git2_https_callbacks(&self, password: &str) -> git2::RemoteCallbacks<'static> {
        let user = self.env("GITOPSD_TEST_GIT_USER").to_string();
        let password = password.to_string();
        let mut tries = 0;
        let mut cb = git2::RemoteCallbacks::new();
        cb.credentials(move |_url, _user, _allowed| {
            tries += 1;
            if tries > 1 {
                return Err(git2::Error::from_str("testbed: credentials rejected"));
            }
            git2::Cred::userpass_plaintext(&user, &password)
        });
        cb
    }

    /// git2 callbacks for the SSH endpoint: this private key (tried once) and a host key check against
    /// GITOPSD_TEST_GIT_KNOWN_HOSTS (or `known_hosts` if given).
    pub fn git2_ssh_callbacks(
        &self,
        key: &Path,
        known_hosts: Option<&Path>,
    ) -> git2::RemoteCallbacks<'static> {
        let key = key.to_path_buf();
        let known_hosts = known_hosts
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(self.env("GITOPSD_TEST_GIT_KNOWN_HOSTS")));
        let mut tries = 0;
        let mut cb = git2::RemoteCallbacks::new();
        cb.credentials(move |_url, user, _allowed| {
            tries += 1;
            if tries > 1 {
                return Err(git2::Error::from_str("testbed: ssh key rejected"));
            }
            git2::Cred::ssh_key(user.unwrap_or("gitopsd-git"), None, &key, None)
        });
        cb.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                return Err(git2::Error::from_str("testbed: not an ssh host key"));
            };
            if known_host_keys(&known_hosts)
                .iter()
                .any(|k| k.as_slice() == hostkey)
            {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::from_str(&format!(
                    "testbed: host key of {host} not in {}",
                    known_hosts.display()
                )))
            }
        });
        cb
    }
}

/// The key blobs of a known_hosts file (all entries; the testbed's holds only its own server).
pub fn known_host_keys(path: &Path) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .collect()
}

/// Pushes `refspecs` and fails on any ref the server rejected. (libgit2 trap: `Remote::push` returns Ok
/// even when the server refuses a ref; only the push_update_reference callback tells.)
pub fn git2_push(
    remote: &mut git2::Remote<'_>,
    refspecs: &[&str],
    mut callbacks: git2::RemoteCallbacks<'_>,
) -> Result<(), String> {
    let rejected = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let r = rejected.clone();
    callbacks.push_update_reference(move |refname, status| {
        if let Some(msg) = status {
            r.borrow_mut().push(format!("{refname}: {msg}"));
        }
        Ok(())
    });
    let mut opts = git2::PushOptions::new();
    opts.remote_callbacks(callbacks);
    remote
        .push(refspecs, Some(&mut opts))
        .map_err(|e| e.to_string())?;
    let rejected = rejected.borrow();
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(rejected.join("; "))
    }
}

/// A lowercase DNS-1123 label (also a valid S3 bucket name), at most 40 characters, unique across
/// processes and runs: `<prefix>-<pid>-<counter>-<time>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let suffix = format!(
        "{}-{}-{}",
        base36(std::process::id() as u64),
        base36(n),
        base36(millis % 36u64.pow(6))
    );
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p = p.trim_matches('-').to_string();
    if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 't');
    }
    p.truncate(40 - 1 - suffix.len());
    let p = p.trim_end_matches('-');
    format!("{p}-{suffix}")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// Environment for running the git CLI isolated from ~/.gitconfig and /etc/gitconfig, with a fixed identity.
pub fn git_isolated_env() -> Vec<(String, String)> {
    [
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_AUTHOR_NAME", "gitopsd test"),
        ("GIT_AUTHOR_EMAIL", "test@gitopsd.invalid"),
        ("GIT_COMMITTER_NAME", "gitopsd test"),
        ("GIT_COMMITTER_EMAIL", "test@gitopsd.invalid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Testbed {
    /// [`git_isolated_env`] plus what the git CLI needs to reach the testbed: the HTTPS CA
    /// (GIT_SSL_CAINFO) and GIT_SSH_COMMAND with the test key and known_hosts.
    /// HTTPS credentials still go in the URL or a credential helper.
    pub fn git_cli_env(&self) -> Vec<(String, String)> {
        let mut env = git_isolated_env();
        // GIT_SSL_CAINFO rather than http.sslCAInfo: it wins over an inherited GIT_SSL_CAINFO.
        env.push((
            "GIT_SSL_CAINFO".into(),
            self.env("GITOPSD_TEST_GIT_CA").into(),
        ));
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
                self.env("GITOPSD_TEST_GIT_SSH_KEY"),
                self.env("GITOPSD_TEST_GIT_KNOWN_HOSTS")
            ),
        ));
        env
    }

    /// `https://USER:PASSWORD@host/...` for the git CLI.
    pub fn https_url_with_credentials(&self, https_url: &str) -> String {
        let rest = https_url.strip_prefix("https://").expect("https URL");
        format!(
            "https://{}:{}@{rest}",
            self.env("GITOPSD_TEST_GIT_USER"),
            self.env("GITOPSD_TEST_GIT_PASSWORD")
        )
    }
}

/// A new unencrypted ed25519 key at `path` (and `path.pub`), made by ssh-keygen as an operator
/// would make a notes signing key or a commit signing key.
pub fn ssh_keygen(path: &Path) -> PathBuf {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitopsd-test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_path_buf()
}

/// `dir/notes-key`, the notes signing key of a test host config (made on first use).
pub fn notes_key(dir: &Path) -> PathBuf {
    let path = dir.join("notes-key");
    if path.exists() {
        return path;
    }
    ssh_keygen(&path)
}

/// Polls `check` every 200 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A bucket's tags, read with the raw SDK (empty when it has none).
pub async fn bucket_tags(sdk: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, String> {
    match sdk.get_bucket_tagging().bucket(bucket).send().await {
        Ok(out) => out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect(),
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_string);
            assert_eq!(code.as_deref(), Some("NoSuchTagSet"), "{e:?}");
            BTreeMap::new()
        }
    }
}

/// A tiny HTTP server on a thread: answers `status` (503 until the test flips it), counts requests.
pub fn flip_server(status: Arc<AtomicU16>, hits: Arc<AtomicUsize>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let code = status.load(Ordering::SeqCst);
            let body = if code == 200 { "ok" } else { "starting" };
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/healthz")
}

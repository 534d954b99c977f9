//! `gitopsd run` as a systemd service, end to end against the testbed (issue 7): the notify
//! protocol on a socket the test binds (READY, STATUS, WATCHDOG, RELOADING, STOPPING), the
//! `/metrics`, `/healthz` and `/readyz` endpoints, SIGHUP reloading a changed host config,
//! SIGTERM in the middle of a health wait, and deploy/kubernetes/rbac.yaml as gitopsd's only
//! permissions.
//!
//! Each test has its own repository, namespace(s) and environment name(s), so tests run in
//! parallel. Uses the end-to-end harness of tests/support/gitopsd.rs.

mod support;

use support::notify::NotifySocket;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitopsd::status::{Note, Outcome, Record};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::Value;
use support::flip_server;
use support::gitopsd::{
    Daemon, Env, Fixture, Gitopsd, Transport, WorkRepo, audit_writes, configmap, configmap_data,
    deployment, json_lines,
};

// ------------------------------------------------------------------------------------------------
// fixture

impl Fixture {
    fn write(&self, name: &str, text: &str) {
        self.repo.write(&format!("{}/{name}", self.env.path), text);
    }

    fn remove(&self, name: &str) {
        self.repo.remove(&format!("{}/{name}", self.env.path));
    }

    /// Replaces `from` by `to` in the host config file (fails if `from` is not there).
    fn edit_config(&self, from: &str, to: &str) {
        let text = self.gitopsd.config_text();
        assert!(text.contains(from), "{from:?} not in the config:\n{text}");
        std::fs::write(&self.gitopsd.config, text.replace(from, to)).unwrap();
    }

    fn record(&self, commit: &str) -> Option<Record> {
        self.repo.record(commit, &self.env.name)
    }

    /// `gitopsd once` on the blocking pool.
    async fn once(&self) -> support::gitopsd::CmdOut {
        let mut cmd = self.gitopsd.command("once", &["--env", &self.env.name]);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = cmd.output().expect("run gitopsd once");
            support::gitopsd::CmdOut {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                elapsed: started.elapsed(),
            }
        })
        .await
        .expect("once task")
    }
}

/// Starts `gitopsd run` (output to a log file in the config's tempdir), with `NOTIFY_SOCKET` and
/// `WATCHDOG_USEC` (2 s: pings every second) when `notify` is given; `WATCHDOG_PID` is unset, so
/// the daemon treats the watchdog as its own. Nothing of the test process's own systemd
/// environment leaks into the child.
fn spawn_run(g: &Gitopsd, notify: Option<&Path>) -> Daemon {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let log = g.dir().join(format!("daemon-{n}.log"));
    let file = File::create(&log).unwrap();
    let mut cmd = g.command("run", &[]);
    cmd.stdout(file.try_clone().unwrap())
        .stderr(file)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    if let Some(socket) = notify {
        cmd.env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", "2000000");
    }
    let child = cmd.spawn().expect("spawn gitopsd run");
    Daemon { child, log }
}

/// Polls `check` every 50 ms until it returns true; panics with the daemon's log after
/// `timeout`, or at once if the daemon exited.
fn wait_running(
    daemon: &mut Daemon,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            panic!(
                "gitopsd run exited ({status}) while waiting for {what}; log:\n{}",
                daemon.log_tail()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                daemon.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async variant of [`wait_running`] for checks against the cluster.
async fn wait_running_async<F, Fut>(daemon: &mut Daemon, what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    support::gitopsd::wait_daemon(daemon, what, timeout, check).await
}

/// The address of the endpoints, from the `endpoints listening` log event.
fn endpoint_address(daemon: &mut Daemon) -> SocketAddr {
    let mut addr = None;
    let log = daemon.log.clone();
    wait_running(
        daemon,
        "the `endpoints listening` log event",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            addr = json_lines(&text)
                .iter()
                .find(|e| e["message"] == "endpoints listening")
                .and_then(|e| e["address"].as_str().map(str::to_string));
            addr.is_some()
        },
    );
    let addr = addr.unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("address {addr:?} of `endpoints listening`: {e}"))
}

/// VmRSS of a process in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

// ------------------------------------------------------------------------------------------------
// the notify socket

// ------------------------------------------------------------------------------------------------
// HTTP and OpenMetrics

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A plain HTTP/1.1 GET (the endpoints are loopback-only HTTP).
fn http_get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the reply");
    let raw = String::from_utf8(raw).expect("reply is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size =
            usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").expect("chunk end");
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Label names and values of one sample.
type Labels = Vec<(String, String)>;

/// Parses the labels `{a="x",b="y"}` at the start of `s`; returns them and the rest after `}`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').ok_or("no `{`")?;
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let (name, r) = rest.split_once('=').ok_or("label without `=`")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = r
            .strip_prefix('"')
            .ok_or("label value not quoted")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_string(), value));
        rest = &r[1 + end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        } else {
            return Err(format!("expected `,` or `}}` at {rest:?}"));
        }
    }
}

/// Checks `body` line by line against the OpenMetrics text format (as much of it as gitopsd
/// uses: HELP/TYPE/UNIT metadata, samples `name{labels} value [timestamp]`, a final `# EOF`,
/// every sample in a family declared by a preceding TYPE) and returns the samples as
/// `name{labels}` (exactly as written) → value.
fn parse_openmetrics(body: &str) -> Result<BTreeMap<String, f64>, String> {
    let body = body
        .strip_suffix("# EOF\n")
        .or_else(|| body.strip_suffix("# EOF"))
        .ok_or("does not end with `# EOF`")?;
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in body.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name
                .filter(|n| is_metric_name(n))
                .ok_or_else(|| fail("bad metric name"))?;
            match kw {
                Some("TYPE") => {
                    let ty = rest.unwrap_or_default();
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ];
                    if !known.contains(&ty) {
                        return Err(fail("unknown type"));
                    }
                    if families.insert(name.to_string(), ty.to_string()).is_some() {
                        return Err(fail("family declared twice"));
                    }
                }
                Some("HELP") | Some("UNIT") => {}
                _ => return Err(fail("unknown metadata line")),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(fail("neither metadata nor a sample"));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("sample without value"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name"));
        }
        let (_labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(|e| fail(&e))?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value"))?
            .split(' ');
        let value = fields
            .next()
            .and_then(parse_number)
            .ok_or_else(|| fail("value is not a number"))?;
        if let Some(ts) = fields.next()
            && ts.parse::<f64>().is_err()
        {
            return Err(fail("timestamp is not a number"));
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields"));
        }
        let family_declared = families.iter().any(|(f, ty)| {
            let suffixes: &[&str] = match ty.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
                "summary" => &["_count", "_sum", "_created", ""],
                "info" => &["_info"],
                _ => &[""],
            };
            suffixes
                .iter()
                .any(|s| name.strip_suffix(s) == Some(f.as_str()))
        });
        if !family_declared {
            return Err(fail("sample of no family declared by a preceding # TYPE"));
        }
        let series = &line[..line.len() - rest.len()];
        if samples.insert(series.to_string(), value).is_some() {
            return Err(fail("duplicate series"));
        }
    }
    Ok(samples)
}

#[test]
fn openmetrics_parser_rejects_what_it_should() {
    let ok = "# HELP a_total x\n# TYPE a counter\na_total{e=\"p\\\"q\",o=\"h\"} 2\n# TYPE b gauge\nb 1.5\n# EOF\n";
    let s = parse_openmetrics(ok).expect("valid text");
    assert_eq!(s["a_total{e=\"p\\\"q\",o=\"h\"}"], 2.0);
    assert_eq!(s["b"], 1.5);
    for bad in [
        "# TYPE a counter\na_total 1\n",             // no EOF
        "# TYPE a counter\na_total one\n# EOF\n",    // not a number
        "a_total 1\n# EOF\n",                        // no TYPE
        "# TYPE a counter\na_total{e=p} 1\n# EOF\n", // unquoted label
        "# TYPE a counter\na_total 1\n\n# EOF\n",    // blank line
        "# TYPE a counter\na_total 1\n# EOF\nb 1\n", // after EOF
        "# TYPE a counter\na_total  1\n# EOF\n",     // two spaces
        "# TYPE a counter\na_total{e=\"x\"} 1 2 3\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// 1. the notify protocol

#[tokio::test(flavor = "multi_thread")]
async fn notify_ready_status_watchdog_stopping_in_order() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "svc-notify", |_| {}).await;
    f.write("cm.yaml", &configmap("app", &[("k", "1")]));
    let c1 = f.repo.commit_push("one ConfigMap");

    // Cold start: the mirror is cloned, then READY, then the first reconcile applies c1.
    let notify = NotifySocket::bind();
    let spawned = Instant::now();
    let mut daemon = spawn_run(&f.gitopsd, Some(&notify.path));
    let pid = daemon.pid();
    wait_running(&mut daemon, "READY=1", Duration::from_secs(120), || {
        notify.position(0, |l| l == "READY=1").is_some()
    });
    let cold_ready = notify.arrival("READY=1").unwrap() - spawned;
    let env = f.env.name.clone();
    let short = &c1[..12];
    let ready = notify.position(0, |l| l == "READY=1").unwrap();
    wait_running(
        &mut daemon,
        "STATUS= of the first reconcile",
        Duration::from_secs(120),
        || {
            notify
                .position(ready, |l| l == format!("STATUS={env}: {short} healthy"))
                .is_some()
        },
    );
    // WATCHDOG_USEC=2 s: a ping every second while the loop is alive; wait for three.
    wait_running(
        &mut daemon,
        "three WATCHDOG=1",
        Duration::from_secs(20),
        || notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count() >= 3,
    );
    assert_eq!(
        f.record(&c1).map(|r| r.outcome),
        Some(Outcome::Healthy),
        "the note agrees with STATUS"
    );

    let terminated = Instant::now();
    let status = daemon.terminate(Duration::from_secs(15));
    let stop_time = terminated.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit after SIGTERM\n{}",
        daemon.log_tail()
    );
    // The child is gone, so every datagram it sent is queued; give the reader thread a moment.
    wait_running_after_exit(&notify, "STOPPING=1");

    let lines = notify.lines();
    let pos = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let ready = pos(&|l| l == "READY=1").expect("READY=1");
    let status_line = pos(&|l| l == format!("STATUS={env}: {short} healthy")).expect("STATUS");
    let first_ping = pos(&|l| l == "WATCHDOG=1").expect("WATCHDOG=1");
    let stopping = pos(&|l| l == "STOPPING=1").expect("STOPPING=1");
    assert!(
        ready < status_line
            && ready < first_ping
            && status_line < stopping
            && first_ping < stopping,
        "order READY < STATUS, WATCHDOG < STOPPING: {lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "READY=1").count(),
        1,
        "READY=1 exactly once: {lines:#?}"
    );
    assert!(
        lines[..ready]
            .iter()
            .all(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
        "before READY only EXTEND_TIMEOUT_USEC: {lines:#?}"
    );
    assert!(
        lines[stopping + 1..].iter().all(|l| l == "WATCHDOG=1"),
        "nothing but a racing ping after STOPPING=1: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l.contains('=') && !l.is_empty()),
        "every line is KEY=VALUE: {lines:#?}"
    );

    // Warm start (the mirror exists and c1 is recorded): time to READY and idle memory.
    let notify = NotifySocket::bind();
    let spawned = Instant::now();
    let mut daemon = spawn_run(&f.gitopsd, Some(&notify.path));
    wait_running(
        &mut daemon,
        "READY=1 (warm)",
        Duration::from_secs(60),
        || notify.position(0, |l| l == "READY=1").is_some(),
    );
    let warm_ready = notify.arrival("READY=1").unwrap() - spawned;
    wait_running(
        &mut daemon,
        "STATUS= converged",
        Duration::from_secs(60),
        || {
            notify
                .position(0, |l| l == format!("STATUS={env}: at {short}"))
                .is_some()
        },
    );
    let rss_ready = vm_rss_kib(daemon.pid());
    // Idle: the loop keeps beating, so the pings go on (GITOPSD_TEST_IDLE_SECS, default 5).
    let idle = Duration::from_secs(
        std::env::var("GITOPSD_TEST_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let pings_before = notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count();
    let idle_until = Instant::now() + idle;
    wait_running(
        &mut daemon,
        "the idle period",
        idle + Duration::from_secs(5),
        || Instant::now() >= idle_until,
    );
    let pings = notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count() - pings_before;
    assert!(
        pings as u64 + 2 >= idle.as_secs(),
        "about one ping a second while idle: {pings} in {idle:?}"
    );
    let rss_idle = vm_rss_kib(daemon.pid());
    eprintln!(
        "daemon-service: start to READY cold {cold_ready:?}, warm {warm_ready:?}; stop {stop_time:?}; \
         VmRSS after READY {rss_ready} KiB, after {idle:?} idle {rss_idle} KiB (pid {pid} then {})",
        daemon.pid()
    );
    let status = daemon.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail());
}

/// After the child exited: waits (bounded) until the reader thread has seen `line`.
fn wait_running_after_exit(notify: &NotifySocket, line: &str) {
    support::gitopsd::wait_for(line, Duration::from_secs(5), || {
        notify.lines().iter().any(|l| l == line)
    });
}

// ------------------------------------------------------------------------------------------------
// 2. endpoints

#[tokio::test(flavor = "multi_thread")]
async fn metrics_healthz_readyz_over_loopback() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "svc-metrics", |_| {}).await;
    f.write("cm.yaml", &configmap("app", &[("k", "1")]));
    let c1 = f.repo.commit_push("one ConfigMap");
    let mut daemon = spawn_run(&f.gitopsd, None);
    let addr = endpoint_address(&mut daemon);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let healthz = http_get(addr, "/healthz");
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok"));

    let env = &f.env.name;
    let healthy_series =
        format!("gitopsd_reconciles_total{{environment=\"{env}\",outcome=\"healthy\"}}");
    let mut last = None;
    wait_running(
        &mut daemon,
        "gitopsd_reconciles_total healthy >= 1",
        Duration::from_secs(120),
        || {
            let r = http_get(addr, "/metrics");
            let done = r.status == 200
                && parse_openmetrics(&r.body)
                    .ok()
                    .and_then(|s| s.get(&healthy_series).copied())
                    .is_some_and(|v| v >= 1.0);
            last = Some(r);
            done
        },
    );
    let r = last.unwrap();
    let ct = r.headers.get("content-type").cloned().unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "content-type {ct:?}"
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    let samples = parse_openmetrics(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
    let get = |series: &str| {
        samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in\n{}", r.body))
    };
    assert_eq!(get(&healthy_series), 1.0, "one healthy reconcile of c1");
    assert!(
        get(&format!(
            "gitopsd_last_healthy_commit_timestamp_seconds{{environment=\"{env}\"}}"
        )) > 1.0e9
    );
    assert!(get("gitopsd_git_fetch_duration_seconds_count") >= 1.0);
    assert_eq!(
        get(&format!(
            "gitopsd_applied_objects_total{{environment=\"{env}\",action=\"create\"}}"
        )),
        1.0
    );
    assert!(
        samples.keys().all(|k| !k.contains(&c1[..12])),
        "no commit in a label"
    );

    let readyz = http_get(addr, "/readyz");
    assert_eq!(
        (readyz.status, readyz.body.as_str()),
        (200, "ok"),
        "after the first fetch"
    );
    assert_eq!(http_get(addr, "/nope").status, 404);

    let status = daemon.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail());
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener is gone after exit"
    );
}

// ------------------------------------------------------------------------------------------------
// 3. SIGHUP

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_changed_config() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_x = tb.namespace(&client, "hup-x").await;
    let ns_y = tb.namespace(&client, "hup-y").await;
    let repo = WorkRepo::new(tb, "svc-hup");
    let x = Env::new("hup-x", "envs/x", &ns_x);
    let y = Env::new("hup-y", "envs/y", &ns_y);
    repo.write("envs/x/cm.yaml", &configmap("cfg-x", &[("k", "x")]));
    repo.write("envs/y/cm.yaml", &configmap("cfg-y", &[("k", "y")]));
    let c1 = repo.commit_push("x and y");
    let g = Gitopsd::new(tb, &repo.remote, Transport::Https, std::slice::from_ref(&x));

    let notify = NotifySocket::bind();
    let mut daemon = spawn_run(&g, Some(&notify.path));
    let deadline = Instant::now() + Duration::from_secs(120);
    let rx = loop {
        if let Some(r) = repo.record(&c1, &x.name) {
            break r;
        }
        assert!(daemon.running(), "exited:\n{}", daemon.log_tail());
        assert!(
            Instant::now() < deadline,
            "no note for x:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rx.outcome, Outcome::Healthy, "{rx:?}");
    assert!(configmap_data(&client, &ns_x, "cfg-x").await.is_some());
    assert!(
        configmap_data(&client, &ns_y, "cfg-y").await.is_none(),
        "y is not configured yet"
    );
    assert!(repo.record(&c1, &y.name).is_none());

    // Same files, same state_dir: a config with both environments, written over the first.
    let both = Gitopsd::new(tb, &repo.remote, Transport::Https, &[x.clone(), y.clone()]);
    let text = both
        .config_text()
        .replace(both.dir().to_str().unwrap(), g.dir().to_str().unwrap());
    std::fs::write(&g.config, text).unwrap();
    let before_hup = notify.lines().len();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    let deadline = Instant::now() + Duration::from_secs(120);
    let ry = loop {
        if let Some(r) = repo.record(&c1, &y.name) {
            break r;
        }
        assert!(
            daemon.running(),
            "exited after SIGHUP:\n{}",
            daemon.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "no note for y after SIGHUP:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ry.outcome, Outcome::Healthy, "{ry:?}");
    assert_eq!(
        configmap_data(&client, &ns_y, "cfg-y")
            .await
            .expect("y applied")["k"],
        "y"
    );
    let note = repo.note(&c1).expect("note");
    assert!(note.unparsed.is_none(), "{note:?}");
    assert_eq!(
        note.environments.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![x.name.clone(), y.name.clone()];
            v.sort();
            v
        },
        "both sections, x kept"
    );
    assert!(
        daemon.log_text().contains("config reloaded"),
        "{}",
        daemon.log_tail()
    );
    // systemd's reload protocol: RELOADING=1 (with MONOTONIC_USEC) then READY=1.
    let reloading = notify
        .position(before_hup, |l| l == "RELOADING=1")
        .unwrap_or_else(|| panic!("no RELOADING=1: {:#?}", notify.lines()));
    let lines = notify.lines();
    assert!(
        lines
            .get(reloading + 1)
            .is_some_and(|l| l.starts_with("MONOTONIC_USEC=")),
        "{lines:#?}"
    );
    assert!(
        notify.position(reloading, |l| l == "READY=1").is_some(),
        "READY=1 after the reload: {lines:#?}"
    );

    let status = daemon.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail());
}

// ------------------------------------------------------------------------------------------------
// 4. SIGTERM during a health wait

const GRACE: Duration = Duration::from_secs(2);

/// The note on `commit`, parsed; fails on text that is not entirely gitopsd's.
fn parsed_note(repo: &WorkRepo, commit: &str) -> Option<Note> {
    let text = repo.note_text(commit)?;
    let note = Note::parse(&text);
    assert!(
        note.unparsed.is_none() && !note.environments.is_empty(),
        "the note is not a whole gitopsd note:\n{text}"
    );
    Some(note)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_unhealthy_rollout_exits_in_grace_and_restart_converges() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "svc-term", |e| {
        e.health_timeout = Duration::from_secs(60);
    })
    .await;
    f.edit_config("shutdown_grace: 5s", "shutdown_grace: 2s");
    f.write("cm.yaml", &configmap("app", &[("v", "1")]));
    let c1 = f.repo.commit_push("v1");
    f.once().await.assert_success("c1");

    // c2: a changed ConfigMap and a Deployment whose pods never become ready. The rollout fails
    // through ProgressDeadlineExceeded after 20 s; the health timeout is 60 s.
    f.write("cm.yaml", &configmap("app", &[("v", "2")]));
    f.write("web.yaml", &deployment("web", 1, Some("unready"), 20, "1"));
    let c2 = f.repo.commit_push("v2 and an unready Deployment");

    let mut daemon = spawn_run(&f.gitopsd, None);
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), &f.ns);
    wait_running_async(
        &mut daemon,
        "the Deployment applied",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move { deployments.get_opt("web").await.ok().flatten().is_some() }
        },
    )
    .await;
    let terminated = Instant::now();
    let status = daemon.terminate(GRACE + Duration::from_secs(5));
    let took = terminated.elapsed();
    eprintln!("sigterm-during-health: exited {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail());
    assert!(took <= GRACE + Duration::from_secs(3), "{took:?}");
    let at_exit = parsed_note(&f.repo, &c2);
    eprintln!("sigterm-during-health: note on c2 at exit: {at_exit:?}");

    // Restart: whatever was left, the commit ends recorded and the cluster consistent with it.
    let out = f.once().await;
    let r = f
        .record(&c2)
        .unwrap_or_else(|| panic!("no record on c2 after restart\n{out}"));
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:?}\n{out}");
    assert!(!r.rolling_back && r.pinned.is_some(), "{r:?}");
    assert!(!out.success(), "c2 is not healthy: {out}");
    parsed_note(&f.repo, &c2).expect("note on c2");
    assert_eq!(
        configmap_data(&f.client, &f.ns, "app").await.expect("app")["v"],
        "1",
        "rolled back to c1"
    );
    assert!(
        deployments.get_opt("web").await.unwrap().is_none(),
        "the rollback deletes what c2 created"
    );
    let r1 = f.record(&c1).expect("c1 record");
    assert_eq!(r1.outcome, Outcome::Healthy);
    // A second restart changes nothing: c2 is pinned, c1 stays in place.
    let again = f.once().await;
    assert_eq!(f.record(&c2), Some(r), "{again}");
}

/// SIGTERM while the health check still waits for a service that would have come up: the
/// interrupted wait is no verdict. After the restart the commit is checked again and recorded
/// healthy (not pinned as unhealthy because the daemon happened to stop).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_health_wait_is_no_verdict() {
    let tb = require_testbed!();
    let status = Arc::new(AtomicU16::new(503));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = flip_server(Arc::clone(&status), Arc::clone(&hits));
    let f = Fixture::with(tb, "svc-term-http", |e| {
        e.health_timeout = Duration::from_secs(60);
        e.http_checks = vec![url.clone()];
    })
    .await;
    f.edit_config("shutdown_grace: 5s", "shutdown_grace: 2s");
    f.write("cm.yaml", &configmap("app", &[("v", "1")]));
    let c1 = f.repo.commit_push("v1");

    let mut daemon = spawn_run(&f.gitopsd, None);
    wait_running(
        &mut daemon,
        "the health check polled twice",
        Duration::from_secs(60),
        || hits.load(Ordering::SeqCst) >= 2,
    );
    let terminated = Instant::now();
    let exit = daemon.terminate(GRACE + Duration::from_secs(5));
    let took = terminated.elapsed();
    assert_eq!(exit.code(), Some(0), "{}", daemon.log_tail());
    assert!(took <= GRACE + Duration::from_secs(3), "{took:?}");
    let at_exit = parsed_note(&f.repo, &c1);
    if let Some(r) = at_exit
        .as_ref()
        .and_then(|n| n.environments.get(&f.env.name))
    {
        assert!(
            r.pinned.is_none(),
            "an interrupted health wait pinned the commit: {r:?}\n{}",
            daemon.log_tail()
        );
    }

    // The service is up now; the restart finishes the job.
    status.store(200, Ordering::SeqCst);
    let out = f.once().await;
    out.assert_success("once after the restart");
    let r = f.record(&c1).expect("record on c1");
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert!(r.errors.is_empty() && r.pinned.is_none(), "{r:?}");
}

// ------------------------------------------------------------------------------------------------
// 5. deploy/kubernetes/rbac.yaml

const SA_NAMESPACE: &str = "gitopsd-system";
const SA_NAME: &str = "gitopsd";

/// Server-side applies every document of deploy/kubernetes/rbac.yaml with the admin client.
async fn apply_rbac_yaml(client: &kube::Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rbac.yaml parses");
    apply_docs(client, docs).await;
}

/// The operator's step for one namespace: the RoleBinding of deploy/kubernetes/namespace.yaml
/// (the test's namespace exists already and stays the test's, so its Namespace document is
/// left out).
async fn bind_namespace(client: &kube::Client, ns: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/namespace.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("NAMESPACE", ns)
        .replace("ENVIRONMENT", "unused")
        .replace("INSTANCE", "unused");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("namespace.yaml parses");
    let bindings: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["kind"] == "RoleBinding")
        .collect();
    assert_eq!(bindings.len(), 1, "namespace.yaml holds one RoleBinding");
    apply_docs(client, bindings).await;
}

async fn apply_docs(client: &kube::Client, docs: Vec<Value>) {
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let pp = PatchParams::apply("gitopsd-test-rbac").force();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let obj: DynamicObject = serde_json::from_value(doc).expect("a Kubernetes object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = kube::api::GroupVersionKind::try_from(&types).expect("gvk");
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{gvk:?} not served"));
        let name = obj.metadata.name.clone().expect("name");
        let api: Api<DynamicObject> = match (caps.scope, &obj.metadata.namespace) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", gvk.kind));
    }
}

/// A token of gitopsd's ServiceAccount (TokenRequest, one hour).
async fn service_account_token(client: &kube::Client) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), SA_NAMESPACE);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = sas
        .create_token_request(SA_NAME, &Default::default(), &req)
        .await
        .expect("TokenRequest for gitopsd");
    resp.status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status")
}

fn rbac_objects(ns: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cm.yaml", configmap("app", &[("v", "1")])),
        ("web.yaml", deployment("web", 1, None, 60, "1")),
        (
            "svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n      targetPort: 8080\n".into(),
        ),
        (
            "role.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: config-reader\nrules:\n  - apiGroups: [\"\"]\n    resources: [configmaps]\n    verbs: [get, list, watch]\n".into(),
        ),
        (
            "binding.yaml",
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: config-reader\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: config-reader\nsubjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: {ns}\n"
            ),
        ),
        (
            "netpol.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n".into(),
        ),
        (
            "pdb.yaml",
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n".into(),
        ),
    ]
}

/// A fixture whose environment talks to the cluster only as gitopsd's ServiceAccount (rbac.yaml
/// applied with the admin client, a TokenRequest token, the testbed CA). Returns it, the admin
/// client and the ServiceAccount's user name.
async fn sa_fixture(
    tb: &'static support::Testbed,
    prefix: &str,
) -> (Fixture, kube::Client, String) {
    let admin = tb.kube_client().await;
    apply_rbac_yaml(&admin).await;
    let token = service_account_token(&admin).await;
    let f = Fixture::with(tb, prefix, |_| {}).await;
    bind_namespace(&admin, &f.ns).await;
    let kubeconfig = f.gitopsd.dir().join("gitopsd-sa.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tb\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: gitopsd\n  user:\n    token: {token}\ncontexts:\n- name: tb\n  context:\n    cluster: tb\n    user: gitopsd\n\
             current-context: tb\n",
            tb.env("GITOPSD_TEST_KUBE_SERVER"),
            tb.env("GITOPSD_TEST_KUBE_CA"),
        ),
    )
    .unwrap();
    f.edit_config(
        &format!("kubeconfig: {}", tb.kubeconfig_path().display()),
        &format!("kubeconfig: {}", kubeconfig.display()),
    );
    let sa_user = format!("system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}");
    (f, admin, sa_user)
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_yaml_is_enough_to_apply_and_prune_and_no_more() {
    let tb = require_testbed!();
    let (f, admin, sa_user) = sa_fixture(tb, "svc-rbac").await;

    // c1: one object of each kind, applied as the ServiceAccount. The RoleBinding to the Role
    // comes in c2 (see role_and_its_binding_in_one_commit_as_the_service_account).
    let objects = rbac_objects(&f.ns);
    for (file, text) in objects.iter().filter(|(file, _)| *file != "binding.yaml") {
        f.write(file, text);
    }
    let c1 = f.repo.commit_push("every kind the ClusterRole grants");
    let out = f.once().await;
    out.assert_success("apply as the ServiceAccount");
    let r1 = f.record(&c1).expect("record on c1");
    assert_eq!(
        (r1.outcome, r1.counts.created),
        (Outcome::Healthy, 6),
        "{r1:?}"
    );
    let (file, text) = objects
        .iter()
        .find(|(file, _)| *file == "binding.yaml")
        .unwrap();
    f.write(file, text);
    let c1b = f.repo.commit_push("bind the Role");
    f.once()
        .await
        .assert_success("a RoleBinding to a Role gitopsd holds");
    let r1b = f.record(&c1b).expect("record on c1b");
    assert_eq!(
        (r1b.outcome, r1b.counts.created),
        (Outcome::Healthy, 1),
        "{r1b:?}"
    );
    let ns = f.ns.as_str();
    let c = &admin;
    assert!(
        Api::<Deployment>::namespaced(c.clone(), ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Service>::namespaced(c.clone(), ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Role>::namespaced(c.clone(), ns)
            .get_opt("config-reader")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<RoleBinding>::namespaced(c.clone(), ns)
            .get_opt("config-reader")
            .await
            .unwrap()
            .is_some()
    );
    let netpols = Api::<NetworkPolicy>::namespaced(c.clone(), ns);
    assert!(netpols.get_opt("default-deny").await.unwrap().is_some());
    assert!(
        Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    // Every write in the namespace was made as the ServiceAccount (not the admin kubeconfig).
    let writes: Vec<_> = audit_writes(tb, &admin, ns)
        .await
        .into_iter()
        .filter(|e| e.user_agent.contains("gitopsd") || e.user == sa_user)
        .collect();
    assert!(
        writes
            .iter()
            .any(|e| e.resource == "deployments" && !e.dry_run && e.user == sa_user),
        "{writes:#?}"
    );
    assert!(writes.iter().all(|e| e.user == sa_user), "{writes:#?}");

    // c2: prune the Service and the NetworkPolicy.
    f.remove("svc.yaml");
    f.remove("netpol.yaml");
    let c2 = f.repo.commit_push("drop the Service and the NetworkPolicy");
    f.once().await.assert_success("prune as the ServiceAccount");
    let r2 = f.record(&c2).expect("record on c2");
    assert_eq!(
        (r2.outcome, r2.counts.deleted),
        (Outcome::Healthy, 2),
        "{r2:?}"
    );
    assert!(
        Api::<Service>::namespaced(c.clone(), ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
    );
    assert!(netpols.get_opt("default-deny").await.unwrap().is_none());

    // c3: a Secret is not granted: the whole commit is rejected, nothing of it applied.
    f.write("cm.yaml", &configmap("app", &[("v", "3")]));
    f.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: not-in-git-really\n",
    );
    let c3 = f.repo.commit_push("a Secret");
    f.once()
        .await
        .assert_failure("a Secret as the ServiceAccount");
    let r3 = f.record(&c3).expect("record on c3");
    assert_eq!(r3.outcome, Outcome::Rejected, "{r3:?}");
    assert!(
        r3.errors.iter().any(|e| e.object.contains("Secret")
            && e.object.contains("db")
            && e.reason.to_ascii_lowercase().contains("forbidden")),
        "{r3:?}"
    );
    assert_eq!(
        configmap_data(c, ns, "app").await.expect("app")["v"],
        "1",
        "nothing of c3 applied"
    );
    assert!(
        Api::<Secret>::namespaced(c.clone(), ns)
            .get_opt("db")
            .await
            .unwrap()
            .is_none()
    );
    let text = f.repo.note_text(&c3).unwrap();
    assert!(!text.contains("not-in-git-really"), "{text}");

    // c4: no escalation either: binding cluster-admin is forbidden.
    f.remove("secret.yaml");
    f.write(
        "admin.yaml",
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: {ns}\n"
        ),
    );
    let c4 = f.repo.commit_push("bind cluster-admin");
    f.once().await.assert_failure("binding cluster-admin");
    let r4 = f.record(&c4).expect("record on c4");
    assert_eq!(r4.outcome, Outcome::Rejected, "{r4:?}");
    assert!(
        r4.errors.iter().any(|e| e.object.contains("RoleBinding")
            && e.reason.to_ascii_lowercase().contains("forbidden")),
        "{r4:?}"
    );
    assert!(
        Api::<RoleBinding>::namespaced(c.clone(), ns)
            .get_opt("admin")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(configmap_data(c, ns, "app").await.expect("app")["v"], "1");
}

/// A Role and a RoleBinding to it in one commit, as the ServiceAccount (example-repo's dev
/// environment has this: api-feature-flags-reader, dev-fluent-bit, ...). Without `bind` the
/// apiserver reads the Role to check for escalation, so the binding's dry-run must wait until
/// the commit's Roles exist (gitopsd defers it and applies Roles in its bootstrap step).
/// With admin credentials (system:masters may bind anything) this never shows.
#[tokio::test(flavor = "multi_thread")]
async fn role_and_its_binding_in_one_commit_as_the_service_account() {
    let tb = require_testbed!();
    let (f, _admin, _) = sa_fixture(tb, "svc-rbac-same").await;
    for (file, text) in rbac_objects(&f.ns) {
        f.write(file, &text);
    }
    let c1 = f.repo.commit_push("a Role and its binding");
    let out = f.once().await;
    let r = f.record(&c1).expect("record on c1");
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}\n{out}");
}

//! HA on two management hosts (issue 15): two `gitopsd run` on one environment, each with its
//! own state dir, identity, notes key (trusting the other's) and ServiceAccount, so the
//! apiserver's audit log tells which host wrote. A Lease in the test's namespace decides.
//!
//! - both running: exactly one host applies each commit;
//! - `kill -9` of the leader during a health wait: the standby finishes the commit;
//! - the leader cut off from the apiserver (a TCP proxy in this process stops forwarding),
//!   then healed: the standby takes over and the old leader never applies again.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use gitopsd::status::Outcome;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use support::flip_server;
use support::gitopsd::{
    AuditEvent, Daemon, Env, Gitopsd, Transport, WorkRepo, audit_writes, configmap, wait_daemon,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Short, so takeovers are quick; the minimum is 5 s.
const LEASE: Duration = Duration::from_secs(6);

/// One host of the pair.
struct Host {
    identity: &'static str,
    gitopsd: Gitopsd,
    /// `system:serviceaccount:NS:NAME`, as the audit log names it.
    user: String,
}

/// Two hosts for one environment of one repository.
struct Pair {
    client: kube::Client,
    repo: WorkRepo,
    ns: String,
    env: Env,
    a: Host,
    b: Host,
}

/// A ServiceAccount `name` in `ns` bound to cluster-admin, and a token of it.
async fn service_account(client: &kube::Client, ns: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    sas.create(&Default::default(), &sa)
        .await
        .expect("create SA");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{ns}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&Default::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    sas.create_token_request(name, &Default::default(), &req)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("token")
}

impl Pair {
    /// `a_server`: the apiserver address host A's kubeconfig uses (a proxy in the partition test).
    async fn new(prefix: &str, a_server: Option<String>, edit: impl Fn(&mut Env)) -> Pair {
        let tb = support::testbed().expect("testbed");
        let client = tb.kube_client().await;
        let ns = tb.namespace(&client, prefix).await;
        let repo = WorkRepo::new(tb, prefix);
        let mut env = Env::new(prefix, "envs/app", &ns);
        edit(&mut env);
        let mut hosts = Vec::new();
        for (identity, server) in [("host-a", a_server.clone()), ("host-b", None)] {
            let token = service_account(&client, &ns, identity).await;
            let gitopsd = Gitopsd::new(
                tb,
                &repo.remote,
                Transport::Https,
                std::slice::from_ref(&env),
            );
            let server = server.unwrap_or_else(|| tb.env("GITOPSD_TEST_KUBE_SERVER").to_string());
            let kubeconfig = gitopsd.dir().join("host.kubeconfig");
            std::fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: tb\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
                     users:\n- name: host\n  user:\n    token: {token}\ncontexts:\n- name: tb\n  context:\n    cluster: tb\n    user: host\n\
                     current-context: tb\n",
                    tb.env("GITOPSD_TEST_KUBE_CA"),
                ),
            )
            .unwrap();
            let text = gitopsd.config_text().replace(
                &format!("kubeconfig: {}", tb.kubeconfig_path().display()),
                &format!("kubeconfig: {}", kubeconfig.display()),
            );
            std::fs::write(&gitopsd.config, text).unwrap();
            hosts.push(Host {
                identity,
                gitopsd,
                user: format!("system:serviceaccount:{ns}:{identity}"),
            });
        }
        let b = hosts.pop().unwrap();
        let a = hosts.pop().unwrap();
        // Each trusts the other's notes key (README: HA, keys).
        for (host, peer) in [(&a, &b), (&b, &a)] {
            let mut text = host.gitopsd.config_text();
            text.push_str(&format!(
                "trusted_note_keys: [{}]\nha:\n  lease_namespace: {ns}\n  identity: {}\n  lease_duration: {}s\n",
                peer_pub(&peer.gitopsd).display(),
                host.identity,
                LEASE.as_secs()
            ));
            std::fs::write(&host.gitopsd.config, text).unwrap();
        }
        Pair {
            client,
            repo,
            ns,
            env,
            a,
            b,
        }
    }

    fn push(&self, v: &str) -> String {
        self.repo
            .write("envs/app/cm.yaml", &configmap("app", &[("v", v)]));
        self.repo.commit_push(&format!("v{v}"))
    }

    fn healthy(&self, commit: &str) -> bool {
        self.repo
            .record(commit, &self.env.name)
            .is_some_and(|r| r.outcome == Outcome::Healthy && !r.rolling_back)
    }

    async fn wait_healthy(&self, daemon: &mut Daemon, commit: &str, timeout: Duration) {
        wait_daemon(daemon, &format!("{commit} healthy"), timeout, || {
            std::future::ready(self.healthy(commit))
        })
        .await;
    }

    /// Non-dry-run writes of the ConfigMap by `user`, from the audit log.
    async fn applies_by(&self, user: &str) -> Vec<AuditEvent> {
        let tb = support::testbed().expect("testbed");
        audit_writes(tb, &self.client, &self.ns)
            .await
            .into_iter()
            .filter(|e| e.resource == "configmaps" && e.name == "app" && !e.dry_run)
            .filter(|e| e.user == user && e.code < 300)
            .collect()
    }
}

fn peer_pub(g: &Gitopsd) -> PathBuf {
    let key = support::notes_key(g.dir());
    PathBuf::from(format!("{}.pub", key.display()))
}

/// Waits until `daemon`'s log says `needle`.
async fn wait_log(daemon: &mut Daemon, needle: &str, timeout: Duration) {
    let log = daemon.log.clone();
    wait_daemon(daemon, needle, timeout, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains(needle))
    })
    .await;
}

async fn wait_leading(daemon: &mut Daemon) {
    wait_log(daemon, "leading the environment", Duration::from_secs(60)).await;
}

fn daemon_log_has(daemon: &Daemon, needle: &str) -> bool {
    daemon.log_text().contains(needle)
}

/// Which daemon's log says it leads (exactly one must).
fn leader_of<'a>(a: &'a Daemon, b: &'a Daemon) -> (bool, bool) {
    (
        daemon_log_has(a, "leading the environment"),
        daemon_log_has(b, "leading the environment"),
    )
}

/// A TCP proxy to `target`. While partitioned it forwards nothing: open connections stall
/// (their bytes are never passed on, and they are closed on healing), new ones are held
/// unanswered, as a real network partition looks to both sides.
struct Proxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target, rx.clone()));
            }
        });
        Proxy { addr, open }
    }

    fn partition(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut open: watch::Receiver<bool>) {
    if !*open.borrow() {
        // Arrived during the partition: never answered; closed when it heals.
        let _ = open.wait_for(|o| *o).await.map(|_| ());
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let mut cut = open.clone();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = async { let _ = cut.wait_for(|o| !*o).await.map(|_| ()); } => {
            // Stalled: hold both sockets, forward nothing, until the partition heals.
            let _ = open.wait_for(|o| *o).await.map(|_| ());
        }
    }
}

/// Both hosts run; each commit is applied by exactly one of them, the leader.
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_apply_each_commit_exactly_once() {
    if support::testbed().is_none() {
        return;
    }
    let p = Pair::new("ha-once", None, |_| {}).await;
    let c1 = p.push("1");
    let mut a = p.a.gitopsd.spawn_run();
    let mut b = p.b.gitopsd.spawn_run();
    p.wait_healthy(&mut a, &c1, Duration::from_secs(90)).await;
    let c2 = p.push("2");
    p.wait_healthy(&mut b, &c2, Duration::from_secs(60)).await;
    let c3 = p.push("3");
    p.wait_healthy(&mut a, &c3, Duration::from_secs(60)).await;

    // Each commit was applied (healthy before the next push) and the writes add up to one
    // per commit: no commit was applied by both. A host that never led wrote nothing.
    let by_a = p.applies_by(&p.a.user).await;
    let by_b = p.applies_by(&p.b.user).await;
    assert_eq!(
        by_a.len() + by_b.len(),
        3,
        "one apply per commit: a {by_a:#?}, b {by_b:#?}"
    );
    let (a_led, b_led) = leader_of(&a, &b);
    assert!(a_led || b_led);
    assert!(
        a_led || by_a.is_empty(),
        "host-a never led but wrote: {by_a:#?}"
    );
    assert!(
        b_led || by_b.is_empty(),
        "host-b never led but wrote: {by_b:#?}"
    );
    let (leader, standby) = if a_led && !b_led {
        (&p.a, &p.b)
    } else {
        (&p.b, &p.a)
    };
    let status = standby.gitopsd.cmd("status", &[]);
    status.assert_success("status on the standby");
    assert!(status.stdout.contains("lease: held by host-"), "{status}");
    eprintln!(
        "ha: 3 commits, applies by host-a {}, by host-b {} (leader {}); status on {}: {}",
        by_a.len(),
        by_b.len(),
        leader.identity,
        standby.identity,
        status
            .stdout
            .lines()
            .find(|l| l.contains("lease:"))
            .unwrap_or_default()
            .trim()
    );
}

/// `kill -9` of the leader while it waits for the health of an applied commit: the standby takes
/// over within the lease duration and finishes the commit; the notes of both are intact.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_leader_mid_apply_the_standby_finishes() {
    if support::testbed().is_none() {
        return;
    }
    let status = Arc::new(AtomicU16::new(200));
    let url = flip_server(Arc::clone(&status), Arc::default());
    let p = Pair::new("ha-kill", None, |e| e.http_checks = vec![url.clone()]).await;
    let c1 = p.push("1");
    let mut a = p.a.gitopsd.spawn_run();
    wait_leading(&mut a).await;
    let mut b = p.b.gitopsd.spawn_run();
    p.wait_healthy(&mut a, &c1, Duration::from_secs(90)).await;

    // c2 is applied by A, whose health wait then hangs on the endpoint.
    status.store(503, Ordering::SeqCst);
    let c2 = p.push("2");
    let client = p.client.clone();
    let ns = p.ns.clone();
    wait_daemon(
        &mut a,
        "c2 applied by host-a",
        Duration::from_secs(60),
        || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                support::gitopsd::configmap_data(&client, &ns, "app")
                    .await
                    .is_some_and(|d| d.get("v").map(String::as_str) == Some("2"))
            }
        },
    )
    .await;
    assert!(!p.healthy(&c2), "c2 must still wait for health");
    a.kill9();
    let killed = Instant::now();
    status.store(200, Ordering::SeqCst);

    p.wait_healthy(&mut b, &c2, LEASE + Duration::from_secs(10))
        .await;
    let failover = killed.elapsed();
    eprintln!("ha: failover (kill -9 of the leader → c2 healthy by the standby): {failover:?}");
    assert!(daemon_log_has(&b, "leading the environment"));
    assert!(p.healthy(&c1), "c1's record is intact");
    // A applied c1 and c2; B re-planned c2 against the live state: nothing left to send.
    assert_eq!(p.applies_by(&p.a.user).await.len(), 2);
    let by_b = p.applies_by(&p.b.user).await;
    assert!(by_b.is_empty(), "the standby re-sent c2: {by_b:#?}");
}

/// The leader loses the apiserver (its connections stall), then gets it back: the standby takes
/// over and applies the commit pushed meanwhile; the old leader applies nothing after the cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_leader_never_applies_again_after_healing() {
    let Some(tb) = support::testbed() else {
        return;
    };
    let target: SocketAddr = tb
        .env("GITOPSD_TEST_KUBE_SERVER")
        .trim_start_matches("https://")
        .parse()
        .expect("apiserver address");
    let proxy = Proxy::start(target).await;
    let p = Pair::new(
        "ha-cut",
        Some(format!("https://127.0.0.1:{}", proxy.addr.port())),
        |_| {},
    )
    .await;
    let c1 = p.push("1");
    let mut a = p.a.gitopsd.spawn_run();
    wait_leading(&mut a).await;
    p.wait_healthy(&mut a, &c1, Duration::from_secs(90)).await;
    let mut b = p.b.gitopsd.spawn_run();

    proxy.partition();
    let cut = Instant::now();
    let c2 = p.push("2");
    p.wait_healthy(&mut b, &c2, LEASE + Duration::from_secs(20))
        .await;
    eprintln!(
        "ha: partition of the leader → c2 healthy by the standby: {:?}",
        cut.elapsed()
    );
    wait_log(
        &mut a,
        "no longer leading the environment",
        Duration::from_secs(30),
    )
    .await;

    proxy.heal();
    // A is back: it sees B's Lease and stands by; B keeps applying.
    wait_log(&mut a, "standing by", Duration::from_secs(30)).await;
    let c3 = p.push("3");
    p.wait_healthy(&mut b, &c3, Duration::from_secs(60)).await;
    let by_a = p.applies_by(&p.a.user).await;
    let by_b = p.applies_by(&p.b.user).await;
    assert_eq!(by_a.len(), 1, "host-a applied only c1: {by_a:#?}");
    assert_eq!(by_b.len(), 2, "host-b applied c2 and c3: {by_b:#?}");
    assert!(a.running(), "host-a keeps running as the standby");
    for line in a.log_text().lines().filter(|l| {
        l.contains("lead") || l.contains("standing by") || l.contains("reconcile failed")
    }) {
        eprintln!("host-a: {line}");
    }
}

/// SIGTERM of the leader: it finishes its step and releases the Lease, so the standby takes over
/// without waiting for the Lease to expire.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_lease_to_the_standby() {
    if support::testbed().is_none() {
        return;
    }
    let p = Pair::new("ha-term", None, |_| {}).await;
    let c1 = p.push("1");
    let mut a = p.a.gitopsd.spawn_run();
    wait_leading(&mut a).await;
    p.wait_healthy(&mut a, &c1, Duration::from_secs(90)).await;
    let mut b = p.b.gitopsd.spawn_run();
    wait_log(&mut b, "standing by", Duration::from_secs(30)).await;
    // A pass by hand on the standby is refused while host-a holds the Lease.
    let once = p.b.gitopsd.once(None);
    once.assert_failure("once on the standby");
    assert!(
        format!("{}{}", once.stdout, once.stderr).contains("Lease is held by host-a"),
        "{once}"
    );
    let stopped = Instant::now();
    let exit = a.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "{}", a.log_tail());
    assert!(a.log_text().contains("lease released"), "{}", a.log_tail());
    wait_leading(&mut b).await;
    let handover = stopped.elapsed();
    eprintln!("ha: SIGTERM of the leader → the standby leads: {handover:?}");
    assert!(
        handover < LEASE,
        "released, not expired: the standby took {handover:?}"
    );
    let c2 = p.push("2");
    p.wait_healthy(&mut b, &c2, Duration::from_secs(60)).await;
    assert_eq!(p.applies_by(&p.b.user).await.len(), 1);
}

/// The `gitopsd-lease` Role and RoleBinding of deploy/kubernetes/rbac.yaml (put into the test's
/// namespace, for a ServiceAccount of its own) are enough for the Lease calls, and reach no
/// other Lease.
#[tokio::test(flavor = "multi_thread")]
async fn rbac_yaml_lease_role_allows_exactly_the_named_leases() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let Some(tb) = support::testbed() else {
        return;
    };
    let admin = tb.kube_client().await;
    let ns = tb.namespace(&admin, "ha-rbac").await;
    let name = "gitopsd-infra-main-dev";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("namespace: gitopsd-system", &format!("namespace: {ns}"));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("rbac.yaml");
    let doc = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == "gitopsd-lease")
            .cloned()
            .unwrap_or_else(|| panic!("{kind} gitopsd-lease in rbac.yaml"))
    };
    let role: Role = serde_json::from_value(doc("Role")).unwrap();
    let binding: RoleBinding = serde_json::from_value(doc("RoleBinding")).unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &role)
        .await
        .expect("create Role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &binding)
        .await
        .expect("create RoleBinding");
    // The binding's subject, gitopsd, now in the test's namespace.
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "gitopsd"}})).unwrap();
    sas.create(&Default::default(), &sa)
        .await
        .expect("create SA");
    let req = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request("gitopsd", &Default::default(), &req)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("token");
    let client = tb.kube_client_with_token(&token).await;

    use gitopsd::ha::lease::LeaseClient;
    let lease = LeaseClient::new(client.clone(), &ns, name, "host-a", LEASE);
    // RBAC takes a moment to see the new binding.
    support::wait_until(
        "the Lease created as gitopsd",
        Duration::from_secs(30),
        || async { matches!(lease.create().await, Ok(Ok(_))) },
    )
    .await;
    let read = lease.read().await.expect("get").expect("the Lease");
    assert!(matches!(lease.renew(read).await, Ok(Ok(_))), "update");
    let other = LeaseClient::new(client, &ns, "gitopsd-infra-main-other", "host-a", LEASE);
    let refused = other
        .read()
        .await
        .expect_err("another Lease is not readable");
    assert!(refused.to_string().contains("403"), "{refused}");
}

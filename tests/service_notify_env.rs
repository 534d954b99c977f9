//! The environment-reading wrappers of `gitopsd::service::sd` and `spawn_watchdog`, exercised in
//! a child process (this binary re-executed) so that `NOTIFY_SOCKET`/`WATCHDOG_USEC` are set
//! only there: environment variables are process-global and `set_var` is unsafe.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use gitopsd::service::{Heartbeat, sd, spawn_watchdog};
use tokio_util::sync::CancellationToken;

const CHILD: &str = "GITOPSD_NOTIFY_TEST_CHILD";

#[test]
fn wrappers_send_to_notify_socket_in_order() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");

    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--exact",
            "wrappers_send_to_notify_socket_in_order",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_nonblocking(true).expect("nonblocking");
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        got,
        [
            "READY=1\n",
            "STATUS=reconciling prod\n",
            "WATCHDOG=1\n",
            "STOPPING=1\n"
        ],
        "messages in order"
    );
}

fn child() {
    assert_eq!(sd::watchdog_interval(), Some(Duration::from_millis(100)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        sd::ready();
        sd::status("reconciling prod");
        let cancel = CancellationToken::new();
        let task = spawn_watchdog(Heartbeat::new(), Duration::from_secs(60), cancel.clone())
            .expect("watchdog configured by WATCHDOG_USEC");
        // The first tick pings immediately; stop before the second (100 ms later).
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
        task.await.expect("watchdog task");
        sd::stopping();
    });
}

#[test]
fn without_notify_socket_everything_is_a_noop() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", "noop_child", "--test-threads=1"])
        .env(CHILD, "noop")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn noop_child() {
    if std::env::var_os(CHILD).is_none_or(|v| v != "noop") {
        return;
    }
    sd::ready();
    sd::status("x");
    sd::watchdog();
    sd::reloading();
    sd::extend_timeout(Duration::from_secs(1));
    sd::stopping();
    assert_eq!(sd::watchdog_interval(), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        assert!(
            spawn_watchdog(
                Heartbeat::new(),
                Duration::from_secs(1),
                CancellationToken::new()
            )
            .is_none()
        );
    });
}

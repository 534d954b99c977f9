//! Signal handling of `gitopsd::service`, in its own test binary because signals are
//! process-wide. The forced-exit path runs in a child process (this binary re-executed with a
//! filter), since it ends the process.

use std::process::Command;
use std::time::Duration;

use gitopsd::service::{FORCED_EXIT_CODE, Signal, spawn_signal_handler};
use tokio_util::sync::CancellationToken;

const CHILD: &str = "GITOPSD_SIGNAL_TEST_CHILD";

fn send(signal: &str) {
    let pid = std::process::id();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid}"))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test]
async fn sighup_reloads_then_sigterm_shuts_down_gracefully() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let _handler = spawn_signal_handler(tx, shutdown.clone()).expect("install handlers");

    send("HUP");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("reload in time");
    assert_eq!(got, Some(Signal::Reload));
    assert!(!shutdown.is_cancelled());

    send("TERM");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("shutdown in time");
    assert_eq!(got, Some(Signal::Shutdown));
    assert!(shutdown.is_cancelled());

    // During shutdown SIGHUP is ignored.
    send("HUP");
    let got = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(got.is_err(), "no reload during shutdown: {got:?}");
}

#[test]
fn second_sigterm_exits_immediately_with_130() {
    if std::env::var_os(CHILD).is_some() {
        child_receives_two_sigterms();
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--exact",
            "second_sigterm_exits_immediately_with_130",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run child");
    assert_eq!(
        out.status.code(),
        Some(FORCED_EXIT_CODE),
        "child stdout:\n{}\nchild stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child_receives_two_sigterms() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let _handler = spawn_signal_handler(tx, shutdown.clone()).expect("install handlers");
        send("TERM");
        assert_eq!(rx.recv().await, Some(Signal::Shutdown));
        send("INT");
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    // Reaching this means the second signal did not end the process.
    std::process::exit(1);
}

//! The systemd notify protocol (`sd_notify(3)`), without unsafe code.
//!
//! The free functions read `NOTIFY_SOCKET` on every call and are no-ops when it is unset (not
//! running under systemd, or `Type=` is not `notify`). They never unset the variable (that would
//! need `unsafe` `std::env::remove_var`); children of the daemon therefore inherit it, which is
//! harmless because systemd only accepts messages from the main PID (`NotifyAccess=main`).
//! Errors are logged, never returned: a failed notification must not take the daemon down.
//!
//! [`Notifier`] carries an explicit socket address, so tests can bind their own socket without
//! touching process-global environment variables.

use std::ffi::{OsStr, OsString};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub use sd_notify::NotifyState;

use super::ServiceError;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Where notifications go: a socket path, an abstract socket (`@name`), or nowhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET`, or disabled when it is unset or empty.
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty()),
        }
    }

    /// Sends to `socket` (a filesystem path, or `@name` for an abstract socket).
    pub fn to(socket: impl Into<OsString>) -> Notifier {
        Notifier {
            socket: Some(socket.into()),
        }
    }

    /// Sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { socket: None }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `states` as one datagram, one `KEY=VALUE` per line. `Ok` without sending when
    /// disabled. The socket is non-blocking: a full receive queue is an error, not a stall.
    pub fn send(&self, states: &[NotifyState<'_>]) -> Result<(), ServiceError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let message = format_message(states);
        let fail = |source: std::io::Error| ServiceError::Notify {
            socket: socket.to_string_lossy().into_owned(),
            message: message.trim_end().to_owned(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(fail)?;
        sock.set_nonblocking(true).map_err(fail)?;
        let sent = send_to(&sock, socket, message.as_bytes()).map_err(fail)?;
        if sent != message.len() {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", message.len()),
            )));
        }
        Ok(())
    }

    /// [`Notifier::send`], logging failures at warn level instead of returning them.
    pub fn send_logged(&self, states: &[NotifyState<'_>]) {
        if let Err(error) = self.send(states) {
            tracing::warn!(error = %error, "systemd notification failed");
        }
    }
}

/// One line per state, as `sd_notify(3)` expects. Newlines inside free-text values (`STATUS=`)
/// would start a new assignment, so they are replaced by spaces.
pub fn format_message(states: &[NotifyState<'_>]) -> String {
    let mut out = String::new();
    for state in states {
        let line = state.to_string().replace(['\n', '\r'], " ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn send_to(sock: &UnixDatagram, socket: &OsStr, buf: &[u8]) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            return sock.send_to_addr(buf, &addr);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract notify sockets exist only on Linux",
            ));
        }
    }
    sock.send_to(buf, socket)
}

fn send_env(states: &[NotifyState<'_>]) {
    Notifier::from_env().send_logged(states);
}

/// `READY=1`: startup (or a reload) finished.
pub fn ready() {
    send_env(&[NotifyState::Ready]);
}

/// `STATUS=msg`: shown by `systemctl status gitopsd`.
pub fn status(msg: &str) {
    send_env(&[NotifyState::Status(msg)]);
}

/// `WATCHDOG=1`. Prefer [`super::spawn_watchdog`], which only pings while the loop is alive.
pub fn watchdog() {
    send_env(&[NotifyState::Watchdog]);
}

/// `STOPPING=1`: graceful shutdown started.
pub fn stopping() {
    send_env(&[NotifyState::Stopping]);
}

/// `RELOADING=1` plus `MONOTONIC_USEC=` (required by systemd ≥ 253 for `Type=notify-reload`,
/// accepted by older ones). Send [`ready`] when the reload has finished.
pub fn reloading() {
    send_env(&reloading_states());
}

fn reloading_states() -> Vec<NotifyState<'static>> {
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(error) => tracing::debug!(error = %error, "no monotonic clock for MONOTONIC_USEC"),
    }
    states
}

/// `EXTEND_TIMEOUT_USEC=`: asks for `d` more time for the current start-up, reload or stop
/// (e.g. a slow first clone). Saturates at `u32::MAX` microseconds (about 71 minutes).
pub fn extend_timeout(d: Duration) {
    send_env(&[extend_timeout_state(d)]);
}

fn extend_timeout_state(d: Duration) -> NotifyState<'static> {
    NotifyState::ExtendTimeoutUsec(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set and `WATCHDOG_PID` is
/// absent or ours. `None` when systemd does not watch us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC).ok();
    let pid = std::env::var(WATCHDOG_PID).ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on explicit values, for tests.
pub fn watchdog_interval_from(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = watchdog_usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = watchdog_pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound_socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_arrive_in_order() {
        let (_dir, path, sock) = bound_socket();
        let n = Notifier::to(path.as_os_str());
        n.send(&[NotifyState::Ready]).expect("ready");
        n.send(&[NotifyState::Status("reconciling prod\nat abc")])
            .expect("status");
        n.send(&[NotifyState::Watchdog]).expect("watchdog");
        n.send(&[NotifyState::Stopping]).expect("stopping");
        assert_eq!(recv(&sock), "READY=1\n");
        assert_eq!(recv(&sock), "STATUS=reconciling prod at abc\n");
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
        assert_eq!(recv(&sock), "STOPPING=1\n");
    }

    #[test]
    fn reloading_carries_monotonic_usec() {
        let (_dir, path, sock) = bound_socket();
        Notifier::to(path.as_os_str())
            .send(&reloading_states())
            .expect("send");
        let msg = recv(&sock);
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let mono = lines.next().unwrap_or_default();
        assert!(mono.starts_with("MONOTONIC_USEC="), "{msg}");
    }

    #[test]
    fn extend_timeout_saturates() {
        assert_eq!(
            extend_timeout_state(Duration::from_secs(90)).to_string(),
            "EXTEND_TIMEOUT_USEC=90000000"
        );
        assert_eq!(
            extend_timeout_state(Duration::from_secs(10 * 3600)).to_string(),
            format!("EXTEND_TIMEOUT_USEC={}", u32::MAX)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("gitopsd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Notifier::to(format!("@{name}"))
            .send(&[NotifyState::Ready])
            .expect("send");
        assert_eq!(recv(&sock), "READY=1\n");
    }

    #[test]
    fn disabled_and_missing_sockets() {
        Notifier::disabled()
            .send(&[NotifyState::Ready])
            .expect("disabled is ok");
        let err = Notifier::to("/nonexistent/gitopsd/notify.sock")
            .send(&[NotifyState::Ready])
            .expect_err("no such socket");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/gitopsd/notify.sock"), "{text}");
        assert!(text.contains("READY=1"), "{text}");
    }

    #[test]
    fn watchdog_interval_rules() {
        assert_eq!(
            watchdog_interval_from(Some("60000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("60000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval_from(Some("60000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval_from(None, Some("7"), 7), None);
    }
}

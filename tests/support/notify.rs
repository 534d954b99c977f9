//! A datagram socket standing in for systemd's notify socket, for tests of `gitopsd run`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A datagram socket standing in for systemd's notify socket. A thread collects every datagram
/// (with its arrival time) until dropped.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        received.lock().unwrap().push((Instant::now(), msg));
                    }
                }
            })
        };
        NotifySocket {
            _dir: dir,
            path,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Every datagram so far, in arrival order.
    pub fn datagrams(&self) -> Vec<(Instant, String)> {
        self.received.lock().unwrap().clone()
    }

    /// Every `KEY=VALUE` line so far (a datagram may carry several), in order.
    pub fn lines(&self) -> Vec<String> {
        self.datagrams()
            .iter()
            .flat_map(|(_, d)| d.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// Index of the first line at or after `from` matching `pred`.
    pub fn position(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| pred(l))
            .map(|(i, _)| i)
    }

    /// Arrival time of the first datagram containing the line `line`.
    pub fn arrival(&self, line: &str) -> Option<Instant> {
        self.datagrams()
            .iter()
            .find(|(_, d)| d.lines().any(|l| l == line))
            .map(|(t, _)| *t)
    }
    /// Every `KEY=VALUE` line so far with its datagram's arrival, in order.
    pub fn timed_lines(&self) -> Vec<(Instant, String)> {
        self.datagrams()
            .iter()
            .flat_map(|(t, d)| d.lines().map(|l| (*t, l.to_string())).collect::<Vec<_>>())
            .collect()
    }

    /// Whether a READY=1 followed a RELOADING=1 at or after line `from`: a reload is complete.
    pub fn reload_done(&self, from: usize) -> bool {
        let lines = self.lines();
        let Some(reloading) = lines.iter().skip(from).position(|l| l == "RELOADING=1") else {
            return false;
        };
        lines[from + reloading..].iter().any(|l| l == "READY=1")
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

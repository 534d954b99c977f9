//! The kstatus program: kstatus's own test objects and its verdicts.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::{self, Testbed};
use crate::{Case, Kstatus};

fn kstatus_bin(tb: &Testbed) -> String {
    tb.env("GITOPSD_TEST_KSTATUS").to_string()
}

/// kstatus's test objects, extracted by the kstatus program from the cli-utils test files.
pub fn kstatus_cases(tb: &Testbed) -> Vec<Case> {
    let dir = tb.env("GITOPSD_TEST_KSTATUS_CASES");
    let out = Command::new(kstatus_bin(tb))
        .args(["cases", dir])
        .output()
        .unwrap_or_else(|e| panic!("run kstatus cases {dir}: {e} (tests/testbed/build kstatus)"));
    assert!(
        out.status.success(),
        "kstatus cases {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Case> = support::gitopsd::json_lines(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap_or("?").to_string(),
            object: c["object"].clone(),
        })
        .collect();
    assert!(
        cases.len() >= 50,
        "expected kstatus's ~58 test objects in {dir}, got {}",
        cases.len()
    );
    cases
}

/// kstatus's verdict for each object, in order.
pub fn run_kstatus(tb: &Testbed, cases: &[Case]) -> Vec<Kstatus> {
    let mut child = Command::new(kstatus_bin(tb))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kstatus (tests/testbed/build kstatus)");
    let mut stdin = child.stdin.take().expect("kstatus stdin");
    let input: String = cases.iter().map(|c| format!("{}\n", c.object)).collect();
    // Written from a thread: kstatus answers as it reads, and a full stdout pipe would block it.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("kstatus output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to kstatus");
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Kstatus> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("kstatus verdict line"))
        .collect();
    assert_eq!(
        verdicts.len(),
        cases.len(),
        "one kstatus verdict per object"
    );
    verdicts
}

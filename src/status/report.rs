//! The `gitopsd status` report in words, for a person (`--output json` is for tools). Pure.

/// Human-readable form of the `status` report (see `reconcile::daemon::status_report`).
pub fn format_report(report: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(envs) = report.as_object() else {
        return out;
    };
    for (env, v) in envs {
        out.push_str(&format!("{env}:\n"));
        out.push_str(&format!(
            "  last healthy: {}\n",
            v["last_healthy"].as_str().unwrap_or("(none)")
        ));
        if let Some(last) = v["last_outcome"].as_object() {
            out.push_str(&format!(
                "  last outcome: {} on {} at {}\n",
                last.get("outcome").and_then(|o| o.as_str()).unwrap_or("?"),
                last.get("commit").and_then(|o| o.as_str()).unwrap_or("?"),
                last.get("finished").and_then(|o| o.as_str()).unwrap_or("?")
            ));
        }
        if let Some(pinned) = v["pinned"].as_object() {
            for (commit, why) in pinned {
                out.push_str(&format!(
                    "  pinned: {commit}: {}\n",
                    why.as_str().unwrap_or("")
                ));
            }
        }
        if let Some(untrusted) = v["untrusted"].as_object() {
            for (commit, why) in untrusted {
                out.push_str(&format!(
                    "  untrusted record ignored: {commit}: {}\n",
                    why.as_str().unwrap_or("")
                ));
            }
        }
        let pending = v["pending"].as_array().map(Vec::len).unwrap_or(0);
        out.push_str(&format!("  pending: {pending} commits\n"));
        out.push_str(&format_live(&v["live"]));
        out.push_str(&format_lease(&v["lease"]));
        if let Some(d) = v["last_drift"].as_object() {
            out.push_str(&format!(
                "  last drift: {} objects at {} ({})\n",
                d.get("count").and_then(|c| c.as_u64()).unwrap_or(0),
                d.get("at").and_then(|c| c.as_str()).unwrap_or("?"),
                if d.get("corrected").and_then(|c| c.as_bool()) == Some(true) {
                    "corrected"
                } else {
                    "reported"
                }
            ));
        }
    }
    out
}

/// `ha:` only: who leads the environment.
fn format_lease(lease: &serde_json::Value) -> String {
    let Some(l) = lease.as_object() else {
        return String::new();
    };
    if let Some(e) = l.get("error").and_then(|e| e.as_str()) {
        return format!("  lease: cannot read it: {e}\n");
    }
    let me = l.get("this_host").and_then(|h| h.as_str()).unwrap_or("");
    match l.get("holder").and_then(|h| h.as_str()) {
        Some(h) => format!(
            "  lease: held by {h}{} ({} transitions)\n",
            if h == me { " (this host)" } else { "" },
            l.get("transitions").and_then(|t| t.as_i64()).unwrap_or(0)
        ),
        None => "  lease: free (the next candidate takes it)\n".to_string(),
    }
}

fn format_live(live: &serde_json::Value) -> String {
    if let Some(e) = live.get("error").and_then(|e| e.as_str()) {
        return format!("  live: cannot read the cluster: {e}\n");
    }
    let n = |k: &str| live.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    if live.is_null() {
        return String::new();
    }
    let mut out = format!(
        "  live: {} objects, {} healthy, {} progressing, {} failed\n",
        n("objects"),
        n("healthy"),
        n("progressing"),
        n("failed")
    );
    for u in live["unhealthy"].as_array().into_iter().flatten() {
        out.push_str(&format!("    {}\n", u.as_str().unwrap_or_default()));
    }
    out
}

//! Markdown for a pull-request comment, split into numbered bodies that each fit the limit.
//!
//! The document is a list of blocks (title and summary table, environment header, error list,
//! one `<details>` per object); a split only ever happens between blocks, so no body cuts a
//! code block or a `<details>` element. A block larger than a whole body keeps its start and
//! its closing lines and says how many diff lines it left out.

use std::fmt::Write as _;

use super::report::{BucketChange, EnvReport, ObjectChange, Report};

/// The title every body starts with (with `(part N/M)` when split).
const TITLE: &str = "## gitopsd preview";
/// Room kept for the title of a split body.
const TITLE_RESERVE: usize = TITLE.len() + " (part 9999/9999)\n\n".len();
/// Smallest accepted limit.
pub const MIN_LIMIT: usize = 512;

/// A unit that is never split.
struct Block {
    /// The environment this block belongs to (repeated as "continued" in a new body).
    env: Option<String>,
    /// An environment header: kept together with the next block, never "continued".
    header: bool,
    head: String,
    /// Lines that may be left out when the block alone is too big.
    body: Vec<String>,
    tail: String,
    /// What replaces `n` left-out lines.
    marker: fn(usize) -> String,
}

impl Block {
    fn plain(env: Option<&str>, header: bool, text: String) -> Block {
        Block {
            env: env.map(str::to_string),
            header,
            head: text,
            body: Vec::new(),
            tail: String::new(),
            marker: |_| String::new(),
        }
    }

    /// A collapsible section holding `body` as a fenced diff after `head`.
    fn diff(env: &str, mut head: String, body: Vec<String>) -> Block {
        let f = fence(&body);
        let _ = writeln!(head, "{f}diff");
        Block {
            env: Some(env.to_string()),
            header: false,
            head,
            body,
            tail: format!("{f}\n\n</details>\n\n"),
            marker: diff_marker,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.body.iter().map(String::len).sum::<usize>() + self.tail.len()
    }

    /// The text, with body lines left out so that it fits in `max` bytes if it can.
    fn render(&self, max: usize) -> String {
        let mut out = String::with_capacity(self.len().min(max));
        out.push_str(&self.head);
        if self.len() <= max {
            self.body.iter().for_each(|l| out.push_str(l));
        } else {
            let total = self.body.len();
            let reserve = self.tail.len() + (self.marker)(total).len();
            let mut kept = 0;
            for line in &self.body {
                if out.len() + line.len() + reserve > max {
                    break;
                }
                out.push_str(line);
                kept += 1;
            }
            out.push_str(&(self.marker)(total - kept));
        }
        out.push_str(&self.tail);
        out
    }
}

fn diff_marker(n: usize) -> String {
    format!(
        "… diff truncated: {n} more lines not shown (too large for one comment; see `--format json`)\n"
    )
}

fn list_marker(n: usize) -> String {
    format!("- … {n} more not shown (too large for one comment; see `--format json`)\n")
}

/// Line breaks shown as `\n`: names and messages come from pushers and PR authors, and a line
/// break would let them start Markdown lines of their own (a blank line even ends the
/// `<details>` HTML block).
fn one_line(s: &str) -> String {
    if !s.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return s.to_string();
    }
    s.replace("\r\n", "\\n")
        .replace(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}'], "\\n")
}

/// Escapes text for HTML (inside `<summary>`), on one line.
fn html(s: &str) -> String {
    one_line(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "&#96;")
}

/// Inline code on one line that survives backticks in the text (the fence is longer than any
/// backtick run inside, padded when the text starts or ends with one).
fn code(s: &str) -> String {
    let s = &one_line(s);
    let longest = longest_run(s, '`');
    let ticks = "`".repeat(longest + 1);
    if longest > 0 {
        format!("{ticks} {s} {ticks}")
    } else {
        format!("{ticks}{s}{ticks}")
    }
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in s.chars() {
        if ch == c {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// A code fence longer than any backtick run in `lines`.
fn fence(lines: &[String]) -> String {
    let longest = lines.iter().map(|l| longest_run(l, '`')).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn object_title(c: &ObjectChange) -> String {
    let kind = if c.group.is_empty() {
        c.kind.clone()
    } else {
        format!("{}.{}", c.kind, c.group)
    };
    match &c.namespace {
        Some(ns) => format!("{kind} {ns}/{}", c.name),
        None => format!("{kind} {}", c.name),
    }
}

fn summary_line(action: &str, what: &str, source: Option<&str>) -> String {
    let mut s = format!(
        "<details>\n<summary><b>{action}</b> <code>{}</code>",
        html(what)
    );
    if let Some(src) = source {
        let _ = write!(s, " <sub>{}</sub>", html(src));
    }
    s.push_str("</summary>\n\n");
    s
}

fn lines_of(text: &str) -> Vec<String> {
    text.split_inclusive('\n')
        .map(|l| {
            if l.ends_with('\n') {
                l.to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

fn object_block(env: &str, c: &ObjectChange) -> Block {
    let mut head = summary_line(c.action.as_str(), &object_title(c), c.source.as_deref());
    if let Some(keys) = &c.changed_keys {
        head.push_str(if c.encrypted {
            "SOPS-encrypted: decrypted only when applied; only the keys that change are shown.\n\n"
        } else {
            "Sensitive object: only the keys that change are shown, never values.\n\n"
        });
        let mut body = Vec::new();
        for (what, list) in [
            ("added", &keys.added),
            ("changed", &keys.changed),
            ("removed", &keys.removed),
        ] {
            for k in list {
                body.push(format!("- {what}: {}\n", code(k)));
            }
        }
        if body.is_empty() {
            body.push("- (no keys)\n".to_string());
        }
        return Block {
            env: Some(env.to_string()),
            header: false,
            head,
            body,
            tail: "\n</details>\n\n".to_string(),
            marker: list_marker,
        };
    }
    let body = lines_of(c.diff.as_deref().unwrap_or_default());
    Block::diff(env, head, body)
}

fn bucket_block(env: &str, b: &BucketChange) -> Block {
    let what = format!("Bucket {} (S3 bucket {})", b.name, b.bucket);
    let mut head = summary_line(b.action.as_str(), &what, b.source.as_deref());
    if let Some(note) = &b.note {
        let _ = writeln!(head, "{}\n", html(note));
    }
    let mut body = Vec::new();
    for f in &b.fields {
        body.push(format!("  {}:\n", one_line(&f.field)));
        body.extend(f.before.lines().map(|l| format!("-   {l}\n")));
        body.extend(f.after.lines().map(|l| format!("+   {l}\n")));
    }
    let o = &b.objects;
    if !o.is_empty() {
        body.push(format!(
            "  objects: {} to upload, {} to replace, {} to delete, {} kept (delete: false)\n",
            o.upload.len(),
            o.replace.len(),
            o.delete.len(),
            o.kept.len()
        ));
        body.extend(o.upload.iter().map(|k| format!("+ {}\n", one_line(k))));
        body.extend(o.replace.iter().map(|k| format!("~ {}\n", one_line(k))));
        body.extend(o.delete.iter().map(|k| format!("- {}\n", one_line(k))));
        body.extend(o.kept.iter().map(|k| format!("  {} (kept)\n", one_line(k))));
    }
    Block::diff(env, head, body)
}

fn counts(e: &EnvReport) -> String {
    let s = &e.summary;
    format!(
        "{} to create, {} to update, {} to delete, {} unchanged",
        s.create, s.update, s.delete, s.unchanged
    )
}

/// The opening: what was compared, the verdict and the table of environments.
fn summary(report: &Report) -> String {
    let mut top = String::new();
    if report.live {
        let _ = writeln!(
            top,
            "Head {} compared with the **live cluster** (server-side dry-run).\n",
            code(short(&report.head))
        );
    } else {
        let _ = writeln!(
            top,
            "Base {} → head {}.\n",
            code(short(&report.base)),
            code(short(&report.head))
        );
    }
    let errors: usize = report.environments.iter().map(|e| e.errors.len()).sum();
    if errors > 0 {
        let _ = writeln!(
            top,
            "**{errors} validation error(s)**: gitopsd would reject this revision.\n"
        );
    } else if !report.has_changes() {
        top.push_str("**No changes.**\n\n");
    }
    if report.environments.is_empty() {
        top.push_str("No environments.\n\n");
        return top;
    }
    top.push_str("| Environment | Create | Update | Delete | Unchanged | Errors |\n");
    top.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for e in &report.environments {
        let s = &e.summary;
        let _ = writeln!(
            top,
            "| {} | {} | {} | {} | {} | {} |",
            code(&e.name),
            s.create,
            s.update,
            s.delete,
            s.unchanged,
            s.errors
        );
    }
    top.push('\n');
    top
}

/// One environment's header, errors, object and bucket blocks.
fn env_blocks(e: &EnvReport, out: &mut Vec<Block>) {
    let rendered = match &e.renderer {
        Some(r) => format!(" Rendered by {}.", code(r)),
        None => String::new(),
    };
    let header = format!(
        "### {} — {}\n\n{}.{rendered}\n\n",
        code(&e.name),
        code(&e.path),
        counts(e)
    );
    out.push(Block::plain(Some(&e.name), true, header));
    if !e.errors.is_empty() {
        out.push(Block {
            env: Some(e.name.clone()),
            header: false,
            head: "**Validation errors**\n\n".to_string(),
            body: e
                .errors
                .iter()
                .map(|err| format!("- {}\n", code(&err.to_string())))
                .collect(),
            tail: "\n".to_string(),
            marker: list_marker,
        });
    }
    for c in &e.changes {
        out.push(object_block(&e.name, c));
    }
    for b in &e.buckets {
        out.push(bucket_block(&e.name, b));
    }
}

fn blocks(report: &Report) -> Vec<Block> {
    let mut out = vec![Block::plain(None, false, summary(report))];
    for e in &report.environments {
        if e.has_changes() || !e.errors.is_empty() {
            env_blocks(e, &mut out);
        }
    }
    out
}

fn continued(env: &str) -> String {
    format!("### {} (continued)\n\n", code(env))
}

/// Renders the report as Markdown bodies of at most `limit` bytes each (when possible: see the
/// module docs).
pub fn render(report: &Report, limit: usize) -> Vec<String> {
    let limit = limit.max(MIN_LIMIT);
    let budget = limit.saturating_sub(TITLE_RESERVE);
    let blocks = blocks(report);
    let fit = |b: &Block| {
        let cont = match &b.env {
            Some(env) if !b.header => continued(env).len(),
            _ => 0,
        };
        b.render(budget.saturating_sub(cont))
    };
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, b) in blocks.iter().enumerate() {
        let text = fit(b);
        let extra = match blocks.get(i + 1) {
            Some(next) if b.header => fit(next).len(),
            _ => 0,
        };
        if !cur.is_empty() && cur.len() + text.len() + extra > budget {
            parts.push(std::mem::take(&mut cur));
        }
        if cur.is_empty()
            && !parts.is_empty()
            && !b.header
            && let Some(env) = &b.env
        {
            cur.push_str(&continued(env));
        }
        cur.push_str(&text);
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(cur);
    }
    let m = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let title = if m > 1 {
                format!("{TITLE} (part {}/{m})", i + 1)
            } else {
                TITLE.to_string()
            };
            format!("{title}\n\n{}\n", body.trim_end())
        })
        .collect()
}

/// The line printed before each body when several are printed together.
pub fn separator(n: usize, m: usize) -> String {
    format!("<!-- gitopsd-preview part {n}/{m} -->")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;
    use crate::preview::report::{EnvReport, ObjectChange, Summary};

    fn change(name: &str, lines: usize) -> ObjectChange {
        let diff: String = (0..lines).map(|i| format!("+line {i} ```\n")).collect();
        ObjectChange {
            action: Action::Create,
            kind: "ConfigMap".into(),
            group: String::new(),
            api_version: "v1".into(),
            namespace: Some("ns".into()),
            name: name.into(),
            source: Some(format!("e/{name}.yaml:1")),
            diff: Some(diff),
            changed_keys: None,
            encrypted: false,
        }
    }

    fn report(changes: Vec<ObjectChange>) -> Report {
        let mut env = EnvReport {
            name: "dev".into(),
            path: "e".into(),
            summary: Summary::default(),
            changes,
            ..EnvReport::default()
        };
        env.count();
        Report {
            schema: 1,
            base: "a".repeat(40),
            head: "b".repeat(40),
            live: false,
            environments: vec![env],
        }
    }

    #[test]
    fn hostile_names_and_messages_stay_on_their_line() {
        let mut c = change("evil`\n\n# Injected heading\n</details>", 1);
        c.source = Some("e/x\n\n- injected item.yaml:1".into());
        let mut r = report(vec![c]);
        r.environments[0]
            .errors
            .push(crate::preview::report::ValidationError {
                object: Some("ConfigMap ``x``".into()),
                path: Some("e/a.yaml".into()),
                line: Some(3),
                message: "bad `value`\n\n## Approved by admin\r\n* item".into(),
            });
        let text = render(&r, 65536).join("\n");
        for line in text.lines() {
            for injected in [
                "# Injected",
                "- injected",
                "## Approved",
                "* item",
                "</details>\\n",
            ] {
                assert!(!line.starts_with(injected), "{line:?} in\n{text}");
            }
        }
        assert!(
            text.contains("evil&#96;\\n\\n# Injected heading\\n&lt;/details&gt;"),
            "{text}"
        );
        // The error's inline code is fenced longer than its backtick runs and stays one line.
        let err = text.lines().find(|l| l.contains("Approved")).unwrap();
        assert!(
            err.starts_with("- ``` e/a.yaml:3: ConfigMap ``x``: bad `value`\\n\\n## Approved"),
            "{err}"
        );
        assert!(err.ends_with(" ```"), "{err}");
    }

    #[test]
    fn one_body_when_it_fits() {
        let parts = render(&report(vec![change("a", 3)]), 65536);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].starts_with("## gitopsd preview\n"));
        // Backticks in the diff get a longer fence.
        assert!(parts[0].contains("````diff\n"));
    }

    #[test]
    fn splits_between_objects_and_truncates_huge_ones() {
        let changes: Vec<_> = (0..20)
            .map(|i| change(&format!("o{i}"), 10))
            .chain([change("huge", 5000)])
            .collect();
        let limit = 1500;
        let parts = render(&report(changes), limit);
        assert!(parts.len() > 5);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= limit, "part {i}: {} bytes", p.len());
            assert_eq!(
                p.matches("<details>").count(),
                p.matches("</details>").count()
            );
            assert_eq!(p.lines().filter(|l| l.starts_with("````")).count() % 2, 0);
            if i > 0 {
                assert!(p.contains("### `dev` (continued)"));
            }
        }
        let last = parts.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.contains("huge") && last.contains("diff truncated"),
            "{last}"
        );
    }

    #[test]
    fn environment_header_stays_with_its_first_object() {
        let parts = render(
            &report((0..6).map(|i| change(&format!("o{i}"), 12)).collect()),
            900,
        );
        for p in &parts {
            if p.contains("### `dev` — ") {
                assert!(
                    p.contains("<details>"),
                    "header alone at the end of a body:\n{p}"
                );
            }
        }
    }
}

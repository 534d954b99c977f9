//! `environments:` checks: each environment's name, folder and namespace, its targets (Kubernetes,
//! S3) and their credential files, the SOPS key file, health checks and concurrency. May call
//! the file system (the credential, key and kubeconfig files must be readable).

use std::collections::BTreeSet;

use super::names::{check_readable, is_dns_label, is_http_url};
use crate::config::{DeniedKind, EnvironmentConfig, HealthConfig, S3Config};
use crate::confine;
use crate::schema::Checker;

/// The checker is at `environments`.
pub(super) fn check_all(envs: &[EnvironmentConfig], c: &mut Checker) {
    if envs.is_empty() {
        c.problem("at least one environment is required");
    }
    let mut names = BTreeSet::new();
    for (i, env) in envs.iter().enumerate() {
        c.at_index(i, |c| check(env, &mut names, c));
    }
}

/// The checker is at `environments[i]`; `names` are those of the environments before it.
fn check<'a>(env: &'a EnvironmentConfig, names: &mut BTreeSet<&'a str>, c: &mut Checker) {
    if !is_dns_label(&env.name) {
        c.problem_at(
            "name",
            format!(
                "{:?} must be a DNS label (lowercase letters, digits, '-'; at most 63)",
                env.name
            ),
        );
    }
    if !names.insert(env.name.as_str()) {
        c.problem_at("name", format!("duplicate environment name {:?}", env.name));
    }
    let path = env.path.trim_matches('/');
    if path.split('/').any(|s| s == ".." || s == ".") || env.path.starts_with('/') {
        c.problem_at(
            "path",
            "must be a relative folder inside the repository without '..'",
        );
    }
    if env.namespace.is_empty() || !is_dns_label(&env.namespace) {
        c.problem_at(
            "namespace",
            format!("{:?} is not a valid namespace name", env.namespace),
        );
    }
    if env.kubernetes.is_none() && env.s3.is_none() {
        c.problem_at(
            "kubernetes",
            "an environment needs a kubernetes or an s3 target",
        );
    }
    if let Some(path) = env.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_ref()) {
        check_readable(c, "kubernetes.kubeconfig", path);
    }
    if let Some(s3) = &env.s3 {
        check_s3(s3, c);
    }
    if let Some(d) = &env.decryption {
        check_readable(c, "decryption.age_key_file", &d.age_key_file);
    }
    c.at("health", |c| check_health(&env.health, c));
    if env.apply_concurrency == 0 {
        c.problem_at("apply_concurrency", "must be at least 1");
    }
    check_bounds(env, c);
}

/// The checker is at `environments[i]`: every glob compiles, the ServiceAccount is `NS/NAME`.
fn check_bounds(env: &EnvironmentConfig, c: &mut Checker) {
    let globs = |key: &str, list: &[String], c: &mut Checker| {
        c.at(key, |c| {
            for (j, glob) in list.iter().enumerate() {
                if !confine::valid_glob(glob) {
                    c.at_index(j, |c| c.problem(format!("{glob:?} is not a valid glob")));
                }
            }
        });
    };
    if let Some(list) = &env.allowed_namespaces {
        globs("allowed_namespaces", list, c);
    }
    globs("cluster_scoped", &env.cluster_scoped, c);
    globs("buckets", &env.buckets, c);
    let denied: Vec<String> = env
        .denied_kinds
        .iter()
        .flat_map(|d| match d {
            DeniedKind::Kind(k) => vec![k.clone()],
            DeniedKind::Binding { kind, subjects } => vec![kind.clone(), subjects.clone()],
        })
        .collect();
    globs("denied_kinds", &denied, c);
    if let Some(sa) = &env.service_account {
        let valid = sa
            .split_once('/')
            .is_some_and(|(ns, name)| is_dns_label(ns) && !name.is_empty() && !name.contains('/'));
        if !valid {
            c.problem_at(
                "service_account",
                format!("{sa:?} must be NAMESPACE/NAME of a ServiceAccount"),
            );
        }
        if env.kubernetes.is_none() {
            c.problem_at("service_account", "needs a kubernetes target");
        }
    }
}

/// The checker is at `environments[i]` (the keys name `s3.…`, as the problems always did).
fn check_s3(s3: &S3Config, c: &mut Checker) {
    if s3.access_key_id_file.is_some() != s3.secret_access_key_file.is_some() {
        c.problem_at(
            "s3",
            "access_key_id_file and secret_access_key_file go together",
        );
    }
    for (key, file) in [
        ("s3.access_key_id_file", &s3.access_key_id_file),
        ("s3.secret_access_key_file", &s3.secret_access_key_file),
    ] {
        if let Some(path) = file {
            check_readable(c, key, path);
        }
    }
    if let Some(endpoint) = &s3.endpoint
        && !is_http_url(endpoint)
    {
        c.problem_at("s3.endpoint", "must be an http(s) URL");
    }
}

/// The checker is at `environments[i].health`.
fn check_health(health: &HealthConfig, c: &mut Checker) {
    if health.timeout.is_zero() {
        c.problem_at("timeout", "must be greater than zero");
    }
    c.at("http", |c| {
        for (j, check) in health.http.iter().enumerate() {
            c.at_index(j, |c| {
                if !is_http_url(&check.url) {
                    c.problem_at("url", "must be an http(s) URL");
                }
                if !(100..=599).contains(&check.expect_status) {
                    c.problem_at("expect_status", "must be an HTTP status code");
                }
            });
        }
    });
}

//! Unit tests of loading and checking host configs.
use super::*;

fn load(text: &str) -> Result<HostConfig, ConfigError> {
    HostConfig::from_text(text, Path::new("/etc/gitopsd/config.yaml"))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load(
        "repository: {url: /srv/infra.git}\nstate_dir: /var/lib/gitopsd\ntrust_unsigned_notes: true\nenvironments:\n  - name: dev\n    path: environments/dev\n    kubernetes: {}\n",
    )
    .unwrap();
    assert_eq!(c.repository.branch, "main");
    assert_eq!(c.repository.poll, Duration::from_secs(30));
    assert_eq!(c.notes_ref, DEFAULT_NOTES_REF);
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    let env = &c.environments[0];
    assert!(env.prune);
    assert_eq!(env.rollback, RollbackPolicy::Auto);
    assert_eq!(env.namespace, "default");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let err = load(
        "repository:\n  url: ssh://git@example.com/infra.git\n  poll: 0s\nnotes_ref: gitopsd\nstate_dir: relative\nlisten: 0.0.0.0:9477\nenvironments:\n  - name: Dev\n    path: ../x\n    kubernetes: {kubeconfig: /nonexistent/kubeconfig}\n  - name: Dev\n    path: y\n",
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = problems.0.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "repository.poll",
        "repository.auth.ssh_key_file",
        "repository.auth.known_hosts_file",
        "notes_ref",
        "listen",
        "state_dir",
        "environments[0].name",
        "environments[0].path",
        "environments[0].kubernetes.kubeconfig",
        "environments[1].name",
        "environments[1].kubernetes",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
}

#[test]
fn problems_name_the_line_of_their_key() {
    let err = load(
        "repository: {url: /srv/infra.git}\nstate_dir: /s\nenvironments:\n  - name: dev\n    path: d\n    kubernetes: {}\n    health:\n      timeout: 0s\n",
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("{err}")
    };
    let p = &problems.0[0];
    assert_eq!(p.key, "environments[0].health.timeout");
    assert_eq!(p.line, Some(8));
    assert_eq!(
        p.to_string(),
        "line 8: environments[0].health.timeout: must be greater than zero"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_name_a_line() {
    let err =
        load("repository: {url: /x}\nstate_dir: /s\nenvironments: []\nbogus: 1\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = load("repository: [\n").unwrap_err();
    assert!(err.to_string().contains("line "), "{err}");
}

#[test]
fn unset_variables_are_reported() {
    let err =
        load("# ${IN_A_COMMENT_IS_FINE}\nrepository: {url: ${GITOPSD_TEST_SURELY_UNSET_VAR}}\n")
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("line 2: environment variable GITOPSD_TEST_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
    assert!(!err.to_string().contains("IN_A_COMMENT"), "{err}");
}

#[test]
fn ha_problems_name_their_keys() {
    let base = "repository: {url: /srv/infra.git}\nstate_dir: /var/lib/gitopsd\ntrust_unsigned_notes: true\nenvironments:\n  - name: dev\n    path: environments/dev\n    kubernetes: {}\n  - name: s3only\n    path: environments/s3\n    s3: {endpoint: 'https://s3.example.com'}\n";
    let err = load(&format!(
        "{base}ha: {{lease_namespace: Bad_NS, lease_duration: 1s}}\n"
    ))
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = problems.0.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "ha.lease_namespace",
        "ha.lease_duration",
        "environments[1].kubernetes",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
    let ok = load(&format!(
        "{}ha: {{lease_namespace: gitopsd-system, identity: mgmt-1}}\n",
        base.split("  - name: s3only").next().unwrap_or_default()
    ))
    .unwrap();
    let ha = ok.ha.unwrap();
    assert_eq!(ha.identity(), "mgmt-1");
    assert_eq!(ha.lease_duration, Duration::from_secs(15));
}

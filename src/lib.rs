//! gitopsd: keeps Kubernetes environments and S3 buckets equal to a git branch and records every
//! outcome as a git note.
//!
//! The modules, in the order data flows through them (fetch → render → validate → plan → apply →
//! health → record), then the shell around them:
//!
//! - `config`: the host config, the operator's input: repository, credentials, environments.
//! - `git` (fetch): the mirror of the config repository, trees and diffs at a revision, notes,
//!   commit signature checks (allowed signers); the only user of libgit2.
//! - `render` (render): a folder with a kustomization → objects, through the pinned `kustomize`
//!   and `helm` in a sandbox, re-run only when its inputs' trees changed; SOPS decryption.
//! - `manifest` (render): the typed desired state (objects, identities, sources), the
//!   renderer of plain-YAML folders and the content limits (bytes, documents, objects).
//! - `confine` (validate): every object and bucket inside the environment's bounds from the host
//!   config (namespaces, cluster-scoped kinds, refused kinds, bucket names), before any request.
//! - `schema` (validate): path-tracking field checks shared by the bucket spec and the host config.
//! - `plan` (plan): what differs between two versions of an object, the one comparison the daemon
//!   and previews share.
//! - `k8s` (validate, apply, health): discovery, server-side dry-run and apply, prune, the
//!   watch-fed live cache and health rules.
//! - `s3` (apply, health): bucket configuration and object sync through the S3 API.
//! - `status` (record): note records per commit and environment: format, parse, merge, sign
//!   and verify (only records a trusted key signed are believed).
//! - `notify` (after record): each environment's outcome as alerts that open and resolve, for
//!   Alertmanager (API v2) and webhooks, delivered off the environment tasks with bounded retries.
//! - `reconcile`: the stages above as one pass per environment (decide, prepare, validate,
//!   apply, health, rollback, record) and the scheduler that runs them.
//! - `ha` (shell): with `ha:`, a Lease per environment in its cluster picks the one host that
//!   reconciles it; the term of leadership fences applies and note pushes.
//! - `preview`: the same flow without applying, for a pull request: Markdown or JSON.
//! - `service` (shell): systemd notify and watchdog, signals, metrics and health endpoints, and
//!   the push-event receiver (signed GitHub, GitLab and generic webhooks trigger a fetch).
//!
//! Pure modules (`manifest`, `plan`, `status`, the preview's report) never do I/O; the effects
//! (`git`, `render`'s sandbox, `k8s`, `s3`) are the only ones that touch the outside world.
#![forbid(unsafe_code)]

pub mod config;
pub mod confine;
pub mod git;
pub mod ha;
pub mod k8s;
pub mod manifest;
pub mod notify;
pub mod plan;
pub mod preview;
pub mod reconcile;
pub mod render;
pub mod s3;
pub mod schema;
pub mod service;
pub mod status;

/// gitopsd's version, recorded in every note.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The User-Agent of every Kubernetes and S3 request, so the servers' audit logs name gitopsd.
pub const USER_AGENT: &str = concat!("gitopsd/", env!("CARGO_PKG_VERSION"));

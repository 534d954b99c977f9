//! gitopsd: keeps Kubernetes environments and S3 buckets equal to a git branch and records every
//! outcome as a git note. Pure core (`manifest`, `plan`, `status`, `preview`) is separate from the
//! effects (`git`, `k8s`, `s3`) that touch the outside world.
#![forbid(unsafe_code)]

pub mod config;
pub mod git;
pub mod k8s;
pub mod manifest;
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

//! gitopsd command line: parses arguments, sets up logging, runs one command and maps its
//! result to an exit code. Owns nothing else; calls `config`, `reconcile`, `preview`, `status`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gitopsd::config::HostConfig;
use gitopsd::reconcile::{self, daemon, source::git, summary};
use gitopsd::status;

#[derive(Parser)]
#[command(
    name = "gitopsd",
    version,
    about = "Keeps Kubernetes environments and S3 buckets equal to a git branch; status lives in git notes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
    },
    /// One reconcile pass; exit 0 only when every selected environment is healthy at the head.
    Once {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
        #[arg(long)]
        env: Option<String>,
        /// `text`: one line per environment; `json`: one JSON array, for tools.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Check a host config and report every problem.
    Validate {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
    },
    /// Per environment: last healthy commit, last outcome, pinned and pending commits.
    Status {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Unpin a commit so the daemon tries it again.
    Retry {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
        #[arg(long)]
        env: String,
        rev: String,
    },
    /// Re-apply an older healthy commit and pin the newer ones.
    Rollback {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long)]
        to: String,
    },
    /// Take over an environment's objects from another instance (or from a gitopsd version
    /// before instances), by relabelling them as this instance's.
    Adopt {
        #[arg(long, default_value = "/etc/gitopsd/config.yaml")]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// The instance that owns them now; without it, objects with no instance label.
        #[arg(long)]
        from_instance: Option<String>,
        /// Only list what would be adopted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Preview what a revision would change (Markdown for a PR comment, or JSON). Exit code:
    /// 0 no changes, 2 changes, 1 errors (including validation errors in the head).
    Preview(gitopsd::preview::PreviewArgs),
}

/// Under systemd, events go to the journal natively: fields are journal fields (`GITOPSD_ENV`,
/// `GITOPSD_COMMIT`, ...; `journalctl -u gitopsd GITOPSD_ENV=prod`) and levels are priorities.
/// Elsewhere: JSON lines on stderr, or text on a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(gitopsd::config::log_filter())
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if gitopsd::config::stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal.with_field_prefix(Some("GITOPSD".to_string()));
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .init();
                return;
            }
            Err(e) => eprintln!("gitopsd: cannot open the journal socket ({e}); logging to stderr"),
        }
    }
    let filter = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gitopsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gitopsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<HostConfig> {
    HostConfig::load(path).map_err(anyhow::Error::from)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => Ok(validate(&config)),
        Command::Run { config: path } => {
            let config = load(&path)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            reconcile::scheduler::run(path, config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once {
            config,
            env,
            output,
        } => once(&load(&config)?, env.as_deref(), output == "json").await,
        Command::Status { config, output } => {
            let config = load(&config)?;
            let report = daemon::status_report(&config).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::format_report(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { config, env, rev } => retry(&load(&config)?, &env, rev).await,
        Command::Adopt {
            config,
            env,
            from_instance,
            dry_run,
        } => adopt(&load(&config)?, &env, from_instance.as_deref(), dry_run).await,
        Command::Preview(args) => Ok(ExitCode::from(gitopsd::preview::run_cli(args).await?)),
        Command::Rollback { config, env, to } => rollback(&load(&config)?, &env, to).await,
    }
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn validate(config: &std::path::Path) -> ExitCode {
    match HostConfig::load(config) {
        Ok(_) => {
            println!("{}: ok", config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn once(config: &HostConfig, env: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let results = daemon::once(config, env).await?;
    let mut all = true;
    let mut json = Vec::new();
    for r in results {
        match &r.step {
            Ok(step) => {
                all &= step.converged();
                if as_json {
                    json.push(summary::json(&r.env, step, r.record.as_ref()));
                } else {
                    println!("{}", summary::line(&r.env, step, r.record.as_ref()));
                }
            }
            Err(e) => {
                all = false;
                if as_json {
                    json.push(serde_json::json!({"environment": r.env, "error": e.to_string()}));
                } else {
                    println!("{}: error: {e}", r.env);
                }
            }
        }
    }
    if as_json {
        println!("{}", serde_json::Value::Array(json));
    }
    Ok(exit_code(all))
}

async fn retry(config: &HostConfig, env: &str, rev: String) -> anyhow::Result<ExitCode> {
    config
        .environment(env)
        .with_context(|| format!("no environment {env} in the host config"))?;
    let mirror = daemon::open_mirror(config).await?;
    git(&mirror, |m| m.fetch()).await?;
    let commit = resolve(&mirror, rev).await?;
    let trust = Arc::new(reconcile::Trust::from_config(config)?);
    if reconcile::retry(&mirror, trust, env, commit).await? {
        println!("{env}: {commit} unpinned; the daemon will try it on its next pass");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{env}: {commit} has no record in this environment; nothing to retry");
        Ok(ExitCode::FAILURE)
    }
}

async fn adopt(
    config: &HostConfig,
    env: &str,
    from_instance: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let adopted = daemon::adopt(config, env, from_instance, dry_run).await?;
    let verb = if dry_run { "would adopt" } else { "adopted" };
    for object in &adopted {
        println!("{verb} {object}");
    }
    println!(
        "{env}: {verb} {} objects as instance {}",
        adopted.len(),
        config.instance()
    );
    Ok(ExitCode::SUCCESS)
}

async fn rollback(config: &HostConfig, env: &str, to: String) -> anyhow::Result<ExitCode> {
    let mirror = daemon::open_mirror(config).await?;
    git(&mirror, |m| m.fetch()).await?;
    let commit = resolve(&mirror, to).await?;
    let mut workers = daemon::build_workers(config, Some(env), None).await?;
    let worker = workers.first_mut().context("no such environment")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let step = worker.manual_rollback(&mirror, commit, &cancel).await?;
    println!("{}", summary::line(env, &step, None));
    Ok(exit_code(step.converged()))
}

async fn resolve(
    mirror: &Arc<gitopsd::git::Mirror>,
    rev: String,
) -> anyhow::Result<gitopsd::git::Oid> {
    Ok(git(mirror, move |m| m.resolve(&rev)).await?)
}

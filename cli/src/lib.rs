//! The one `lifeboat` binary: the local repository commands (`lifeboat repo …`) now; the
//! cluster client commands, `server` and `agent` join it as they are built.
//!
//! Exit codes: 0 on success, 1 on failure with one sentence on stderr naming what is wrong.

mod progress;
mod repo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lifeboat: file-level backup of Kubernetes volumes into restic repositories.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with a repository directly: init, backup, snapshots, restore, check, forget, prune, unlock.
    Repo(repo::RepoArgs),
}

/// Parses the arguments, runs the command, and turns errors into one line and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Repo(args) => repo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lifeboat: {}", sentence(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one line; each layer's message describes only itself.
fn sentence(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // Quiet unless asked: warnings of the format engine about single files are reported in
    // the command's result instead.
    let filter =
        EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

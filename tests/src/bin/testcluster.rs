//! Starts the simulated cluster for a person to try lifeboat against: the API-server stand-in,
//! `lifeboat install`, a `lifeboat server` and one `lifeboat agent` per node, with backups in a
//! local directory (or on the S3 server with `--s3`). Prints the KUBECONFIG to use, then runs
//! until Ctrl-C, when every process is stopped.
//!
//! ```sh
//! cargo build --workspace --bins && target/debug/testcluster [--nodes 2] [--s3]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lifeboat_tests::cluster::{Cluster, Storage, wait_for};

#[derive(Debug, Parser)]
#[command(about = "Run a simulated cluster with lifeboat installed, until Ctrl-C")]
struct Args {
    /// Simulated nodes, each with its own agent.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Keep backups on the S3 server (needs moto_server on PATH or MOTO_SERVER) instead of a
    /// local directory.
    #[arg(long)]
    s3: bool,
    /// Where the directory storage lives (default: target/testcluster-backups).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let storage = if args.s3 {
        Storage::S3(lifeboat_tests::S3::bucket("testcluster"))
    } else {
        let dir = args
            .dir
            .unwrap_or_else(|| PathBuf::from("target/testcluster-backups"));
        std::fs::create_dir_all(&dir)?;
        Storage::Directory(std::fs::canonicalize(&dir)?)
    };
    println!("starting the API-server stand-in and installing lifeboat …");
    let mut cluster = Cluster::new(storage);
    let install = cluster.install();
    print!("{}", install.stdout);
    cluster.start_server();
    let nodes: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    for node in &nodes {
        cluster.start_agent(node);
    }
    wait_for("the agents to connect", Duration::from_secs(30), || {
        (cluster.live_agents().len() == nodes.len()).then_some(())
    });
    let kubeconfig = cluster.dir.path().join("kubeconfig");
    println!(
        "\nlifeboat runs: server on {metrics} (/metrics, /agents), {n} agents ({list}).\n\
         In another shell:\n\n  export KUBECONFIG={kc}\n  target/debug/lifeboat backup-location get\n\n\
         Logs are in {dir}. Press Ctrl-C to stop.",
        metrics = cluster.metrics_address(),
        n = nodes.len(),
        list = nodes.join(", "),
        kc = kubeconfig.display(),
        dir = cluster.dir.path().display(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    println!("stopping …");
    drop(cluster);
    Ok(())
}

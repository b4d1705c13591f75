//! `dlog-peers`: the command line. It parses the flags, checks them, connects to one peer
//! (`nats` or `etcd`) already running on this machine, runs the journal workload against it
//! (`load`) and writes the report (`report`).

mod etcd;
mod flags;
mod load;
mod nats;
mod pacer;
mod report;

use clap::{Parser, Subcommand};

use crate::flags::{EtcdArgs, NatsArgs};

/// The journal workload (one publisher, small records, durable acknowledgement) against a
/// peer system, for comparison with `dlog bench --workload journal`.
#[derive(Parser, Debug)]
#[command(name = "dlog-peers", version)]
struct Cli {
    /// Client runtime threads: 1 runs the client on one thread (tokio current-thread), which
    /// leaves the other vCPU to the server; the open-loop pacer has its own thread either way.
    #[arg(long, global = true, default_value_t = 1)]
    client_threads: usize,
    #[command(subcommand)]
    peer: PeerCommand,
}

#[derive(Subcommand, Debug)]
enum PeerCommand {
    /// NATS JetStream: publish with ack to one file-storage stream.
    Nats(NatsArgs),
    /// etcd: one put per record, unique keys, one client.
    Etcd(EtcdArgs),
}

/// The client's runtime: current-thread for one thread, else multi-thread.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        0 => anyhow::bail!("--client-threads must be at least 1"),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    Ok(builder.enable_all().build()?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = runtime(cli.client_threads).and_then(|runtime| {
        runtime.block_on(async {
            match &cli.peer {
                PeerCommand::Nats(args) => nats::run(args, cli.client_threads).await,
                PeerCommand::Etcd(args) => etcd::run(args, cli.client_threads).await,
            }
        })
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dlog-peers: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

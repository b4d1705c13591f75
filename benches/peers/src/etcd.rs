//! The etcd peer: a record is one put of a `record_size`-byte value under a unique key
//! `<prefix><n>`; its acknowledgement is the put's response. One client (one gRPC channel);
//! concurrent puts are multiplexed on it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Client, KvClient};

use crate::flags::EtcdArgs;
use crate::load::{self, Peer};
use crate::report::{self, PeerInfo};

/// 64 puts in flight by default in the peak phase.
const DEFAULT_IN_FLIGHT: usize = 64;

/// What an acknowledgement means, for the report.
const DURABILITY: &str = "put acknowledged after its raft entry is appended to the WAL and \
     fdatasync'd (single member, so the quorum is this one disk; concurrent puts share an \
     fsync) and applied to the backend: durable on this one disk";

/// The key-value client and the value written for every record.
#[derive(Clone)]
struct EtcdPeer {
    kv: KvClient,
    key_prefix: String,
    value: Vec<u8>,
}

impl Peer for EtcdPeer {
    async fn put(&self, seq: u64) -> anyhow::Result<()> {
        let mut kv = self.kv.clone();
        kv.put(format!("{}{seq}", self.key_prefix), self.value.clone(), None).await?;
        Ok(())
    }
}

/// Connects and asks the server's version, retrying while the server starts.
async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<(Client, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5));
            let mut client = Client::connect([endpoint], Some(options)).await?;
            let version = client.status().await?.version().to_owned();
            anyhow::Ok((client, version))
        };
        match attempt.await {
            Ok(connected) => return Ok(connected),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("connecting to etcd at {endpoint}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `dlog-peers etcd`.
pub(crate) async fn run(args: &EtcdArgs, client_threads: usize) -> anyhow::Result<()> {
    let plan = args.load.plan(DEFAULT_IN_FLIGHT)?;
    let (client, version) = connect(&args.endpoint, args.load.connect_timeout()?).await?;
    let peer = EtcdPeer {
        kv: client.kv_client(),
        key_prefix: args.key_prefix.clone(),
        value: vec![b'j'; args.load.record_size],
    };
    let (peak, rated) = load::journal(&peer, &plan).await?;

    let mut config = args.load.config(&plan);
    config["client_threads"] = client_threads.into();
    config["endpoint"] = args.endpoint.clone().into();
    config["key_prefix"] = args.key_prefix.clone().into();
    let info = PeerInfo {
        peer: "etcd",
        version,
        durability: DURABILITY.to_owned(),
        record_size: args.load.record_size,
        config,
    };
    report::emit(&report::document(&info, &peak, &rated), args.load.json.as_deref())
}

//! The NATS JetStream peer: one stream with file storage, deleted and created fresh each run,
//! one subject; a record is a JetStream publish and its acknowledgement is the server's
//! publish-ack. The client is async-nats, one connection, publishes pipelined on it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use crate::flags::{NatsArgs, ServerSync};
use crate::load::{self, Peer};
use crate::report::{self, PeerInfo};

/// 256 publishes in flight by default in the peak phase (JetStream async publish).
const DEFAULT_IN_FLIGHT: usize = 256;
/// The client-side cap on unacknowledged publishes; the open-loop phase must not hit it.
const ACKS_IN_FLIGHT_MAX: usize = 1 << 20;

/// A JetStream context and the record to publish.
#[derive(Clone)]
struct NatsPeer {
    js: jetstream::Context,
    subject: async_nats::Subject,
    payload: Bytes,
}

impl Peer for NatsPeer {
    async fn put(&self, _seq: u64) -> anyhow::Result<()> {
        let ack = self.js.publish(self.subject.clone(), self.payload.clone()).await?;
        ack.await?;
        Ok(())
    }
}

/// What an acknowledgement means, for the report.
fn durability(sync: ServerSync) -> &'static str {
    match sync {
        ServerSync::None => {
            "publish-ack once the message is stored in the stream's file store, i.e. written \
             (pwrite) into the OS page cache; no per-message fsync (nats-server 2.9 has no \
             sync_interval; its filestore syncs on its own timer, every 2 min by default), so an \
             acked record can be lost on power loss or a VM crash: NOT durable"
        }
        ServerSync::Always => {
            "publish-ack after the message is written to the stream's file store and fsynced \
             (jetstream sync_interval: always): durable on this one disk"
        }
    }
}

/// Connects, retrying while the server starts.
async fn connect(url: &str, timeout: Duration) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt =
            async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2)).connect(url).await;
        match attempt {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("connecting to {url}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `dlog-peers nats`.
pub(crate) async fn run(args: &NatsArgs, client_threads: usize) -> anyhow::Result<()> {
    let plan = args.load.plan(DEFAULT_IN_FLIGHT)?;
    let client = connect(&args.url, args.load.connect_timeout()?).await?;
    let info = client.server_info();
    if !info.jetstream {
        bail!("{} has JetStream disabled", args.url);
    }
    let js = jetstream::ContextBuilder::new()
        .timeout(plan.op_timeout)
        .max_ack_inflight(ACKS_IN_FLIGHT_MAX)
        .build(client.clone());
    // A stream left by an earlier run is replaced, so every run starts empty.
    let _ = js.delete_stream(&args.stream).await;
    js.create_stream(stream::Config {
        name: args.stream.clone(),
        subjects: vec![args.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {} (file storage)", args.stream))?;

    let payload = Bytes::from(vec![b'j'; args.load.record_size]);
    let peer = NatsPeer { js: js.clone(), subject: args.subject.clone().into(), payload };
    let (peak, rated) = load::journal(&peer, &plan).await?;
    let _ = js.delete_stream(&args.stream).await;

    let mut config = args.load.config(&plan);
    config["client_threads"] = client_threads.into();
    config["url"] = args.url.clone().into();
    config["stream"] = args.stream.clone().into();
    config["subject"] = args.subject.clone().into();
    config["storage"] = "file".into();
    config["server_sync"] = format!("{:?}", args.server_sync).to_lowercase().into();
    let info = PeerInfo {
        peer: "nats-jetstream",
        version: info.version,
        durability: durability(args.server_sync).to_owned(),
        record_size: args.load.record_size,
        config,
    };
    report::emit(&report::document(&info, &peak, &rated), args.load.json.as_deref())
}

#!/usr/bin/env bash
# benches/peers/run.sh: the journal workload (one publisher, 100-byte records, durable ack)
# on NATS JetStream and etcd, then on dlog (`dlog bench --workload journal`), and a table
# comparing them. Each server runs on 127.0.0.1 only, in a fresh data dir, bounded in time,
# and is stopped (trap) and its dir removed after its run. See benches/peers/README.md.
#
# usage: benches/peers/run.sh [--skip-dlog] [--peers "nats etcd"] [--out DIR] [-- DLOG_PEERS_FLAGS...]
#   --skip-dlog   do not run dlog (its row is left out of the table)
#   --peers LIST  which peers to run (default "nats etcd")
#   --out DIR     where the JSON reports go (default benches/peers/target/results/<UTC time>)
#   after --       flags for every dlog-peers run, e.g. -- --duration-secs 5 --rated-duration-secs 5
# environment: DLOG (dlog binary, default target/release/dlog), NATS_PORT (4222),
#   ETCD_PORT (2379), ETCD_PEER_PORT (2380), PEER_TIMEOUT (seconds per peer run, 120),
#   DLOG_TIMEOUT (seconds for the dlog run, 300), DATA_BASE (parent of the temp data dirs,
#   default benches/peers/target: the repo's disk, never a tmpfs /tmp).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/benches/peers
SKIP_DLOG=0
PEERS="nats etcd"
OUT=""
PEER_ARGS=()
while (($#)); do
    case $1 in
        --skip-dlog) SKIP_DLOG=1 ;;
        --peers) PEERS=${2?--peers needs a list}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        --) shift; PEER_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
NATS_PORT=${NATS_PORT:-4222}
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
PEER_TIMEOUT=${PEER_TIMEOUT:-120}
DLOG_TIMEOUT=${DLOG_TIMEOUT:-300}
DATA_BASE=${DATA_BASE:-$HERE/target}
OUT=${OUT:-$HERE/target/results/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$HERE/target/release/dlog-peers

SERVER_PID=""
DATA_DIR=""
stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [[ -n $DATA_DIR ]]; then rm -rf "$DATA_DIR"; fi
    DATA_DIR=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# Runs "$@" (a peer) in a subshell with errexit and its own cleanup trap; a failure is
# recorded in FAILED and the other systems still run, and the table is still printed.
FAILED=()
run_step() {
    local name=$1 rc=0
    shift
    set +e
    (
        set -e
        trap stop_server EXIT
        trap 'exit 130' INT TERM
        "$@"
    )
    rc=$?
    set -e
    if ((rc == 130)); then exit 130; fi
    if ((rc != 0)); then
        echo "run.sh: $name failed (exit $rc)" >&2
        FAILED+=("$name")
    fi
}

# --- what is needed ---------------------------------------------------------------------
install_missing() {
    local missing=()
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    dpkg -s libprotobuf-dev >/dev/null 2>&1 || missing+=(libprotobuf-dev)
    command -v python3 >/dev/null || missing+=(python3)
    ((${#missing[@]})) || return 0
    echo "run.sh: installing ${missing[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

# Fails if something already listens on 127.0.0.1:$1.
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "run.sh: 127.0.0.1:$1 is already in use (set ${2}_PORT to another port)" >&2
        exit 1
    fi
}

# Waits up to $2 seconds for 127.0.0.1:$1 to accept connections while the server lives.
wait_port() {
    local deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "run.sh: the server exited; its log:" >&2; cat "$DATA_DIR"/*.log >&2 || true; exit 1; }
        ((SECONDS < deadline)) || { echo "run.sh: nothing listens on 127.0.0.1:$1 after $2 s" >&2; exit 1; }
        sleep 0.1
    done
}

# A server's lifetime is bounded too: it stops by itself even if this script is killed.
SERVER_LIFETIME=$((PEER_TIMEOUT + 30))

run_nats() {
    port_free "$NATS_PORT" NATS
    DATA_DIR=$(mktemp -d "$DATA_BASE/nats.XXXXXX")
    local conf=$DATA_DIR/nats.conf sync=always
    # 2.10+ can fsync before every publish-ack; 2.9 (Debian bookworm) rejects the field.
    printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s", sync_interval: always }\n' \
        "$NATS_PORT" "$DATA_DIR/js" >"$conf"
    if ! nats-server -c "$conf" -t >/dev/null 2>&1; then
        sync=none
        printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s" }\n' "$NATS_PORT" "$DATA_DIR/js" >"$conf"
        echo "run.sh: $(nats-server --version) has no jetstream sync_interval: running it as is," \
            "so its publish-acks are NOT durable (page cache only)"
    fi
    timeout -s TERM "$SERVER_LIFETIME" nats-server -c "$conf" -l "$DATA_DIR/nats-server.log" &
    SERVER_PID=$!
    wait_port "$NATS_PORT" 15
    timeout --foreground -s INT "$PEER_TIMEOUT" "$BIN" nats --url "nats://127.0.0.1:$NATS_PORT" --server-sync "$sync" \
        --json "$OUT/nats.json" "${PEER_ARGS[@]}"
    cp "$DATA_DIR/nats-server.log" "$OUT/" 2>/dev/null || true
    stop_server
}

run_etcd() {
    port_free "$ETCD_PORT" ETCD
    port_free "$ETCD_PEER_PORT" ETCD_PEER
    DATA_DIR=$(mktemp -d "$DATA_BASE/etcd.XXXXXX")
    local client=http://127.0.0.1:$ETCD_PORT peer=http://127.0.0.1:$ETCD_PEER_PORT
    timeout -s TERM "$SERVER_LIFETIME" etcd --name s1 --data-dir "$DATA_DIR/data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "s1=$peer" --initial-cluster-state new \
        --logger zap --log-level warn --log-outputs "$DATA_DIR/etcd.log" &
    SERVER_PID=$!
    wait_port "$ETCD_PORT" 15
    timeout --foreground -s INT "$PEER_TIMEOUT" "$BIN" etcd --endpoint "$client" --json "$OUT/etcd.json" "${PEER_ARGS[@]}"
    cp "$DATA_DIR/etcd.log" "$OUT/" 2>/dev/null || true
    stop_server
}

run_dlog() {
    if ((SKIP_DLOG)); then
        echo "run.sh: skipping dlog (--skip-dlog): the table has no dlog row and no ratios"
        return
    fi
    local dlog=${DLOG:-$ROOT/target/release/dlog}
    if [[ ! -x $dlog ]]; then
        echo "run.sh: no dlog binary at $dlog: build it (cargo build --release), set DLOG, or pass --skip-dlog" >&2
        return 1
    fi
    echo "== dlog: $dlog bench --workload journal --record-size 100"
    (cd "$ROOT" && timeout -s INT "$DLOG_TIMEOUT" "$dlog" bench --workload journal --record-size 100 \
        --json "$OUT/dlog.json")
}

# --- run --------------------------------------------------------------------------------
install_missing
echo "== building dlog-peers"
cargo build --release --manifest-path "$HERE/Cargo.toml" --target-dir "$HERE/target"
mkdir -p "$OUT" "$DATA_BASE"
echo "$(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg) nproc $(nproc)" >"$OUT/machine.txt"
for p in $PEERS; do
    case $p in
        nats) echo "== NATS JetStream ($(nats-server --version))"; run_step nats run_nats ;;
        etcd) echo "== etcd ($(etcd --version | head -1))"; run_step etcd run_etcd ;;
        *) echo "run.sh: unknown peer $p (nats, etcd)" >&2; exit 2 ;;
    esac
done
run_step dlog run_dlog

# --- table ------------------------------------------------------------------------------
echo "== results in $OUT ($(cat "$OUT/machine.txt"))"
python3 - "$OUT" <<'PY'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])
rows = []
for name in ("dlog", "nats", "etcd"):
    path = out / f"{name}.json"
    if path.exists():
        try:
            rows.append((name, json.loads(path.read_text())))
        except json.JSONDecodeError as err:
            print(f"{path}: not JSON ({err})")
dlog = next((doc for name, doc in rows if name == "dlog"), None)

def num(doc, *keys):
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if isinstance(doc, (int, float)) else None

def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"

def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.3g}x"

header = ["system", "records/s", "MB/s", "rated at rec/s", "p50 us", "p99 us", "p999 us",
          "dlog/peer rec/s", "dlog/peer p99"]
table = [header]
for name, doc in rows:
    lat = ("publish_latency_us",)
    is_peer = name != "dlog" and dlog is not None
    table.append([
        f"{doc.get('peer', name)} {doc.get('version', '')}".strip(),
        fmt(num(doc, "records_per_s")), fmt(num(doc, "mb_per_s"), 2),
        fmt(num(doc, "latency_at_records_per_s")),
        fmt(num(doc, *lat, "p50")), fmt(num(doc, *lat, "p99")), fmt(num(doc, *lat, "p999")),
        ratio(num(dlog, "records_per_s"), num(doc, "records_per_s")) if is_peer else "",
        ratio(num(dlog, *lat, "p99"), num(doc, *lat, "p99")) if is_peer else "",
    ])
widths = [max(len(row[i]) for row in table) for i in range(len(header))]
for i, row in enumerate(table):
    print("| " + " | ".join(cell.ljust(w) if j == 0 else cell.rjust(w)
                            for j, (cell, w) in enumerate(zip(row, widths))) + " |")
    if i == 0:
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
print("\nlatency: open loop at the 'rated at' rate (default half of that system's peak), from each")
print("record's intended send time to its ack; dlog/peer p99 < 1 means dlog's p99 is lower.")
if dlog is None:
    print("(no dlog row: filled in by run.sh when dlog runs)")
def durability(name, doc):
    if "durability" in doc:
        return doc["durability"]
    config = doc.get("config", {})
    if name == "dlog" and "ack_quorum_size" in config:
        return (f"ack once {config['ack_quorum_size']} of the {config.get('write_quorum_size', '?')} "
                f"bookies an entry is written to have it durable in their journals (write + "
                f"fdatasync); the {config.get('bookies', '?')} bookies share this machine's one disk")
    return "?"

print("durability (what an ack means):")
for name, doc in rows:
    print(f"  {doc.get('peer', name)}: {durability(name, doc)}")
errors = [(doc.get("peer", name), doc.get("errors")) for name, doc in rows if doc.get("errors")]
for peer, count in errors:
    print(f"  WARNING: {peer} reported {count} errors")
PY
if ((${#FAILED[@]})); then
    echo "run.sh: failed: ${FAILED[*]}" >&2
    exit 1
fi

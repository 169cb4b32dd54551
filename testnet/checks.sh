# shellcheck shell=bash
# Helpers of the testnet scenarios (walkthrough, ingress): timing, checks that count failures,
# figures printed at the end, and the CLI and `service ps` of a node. Source after lib.sh.

failures=0
declare -a figures=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
ok() { say "  ok: $*"; }
fail() { say "  FAILED: $*"; failures=$((failures + 1)); }
figure() { figures+=("$1|$2"); }

# The CLI on node $CLI_NODE (node 1 unless a step kills it).
CLI_NODE=1
cli() { docker exec "$(node_name "$CLI_NODE")" shoal "$@"; }
# Tasks of service $1 as JSON (current and history).
tasks() { cli service ps "$1" --format json; }
# Current tasks of $1 that really run (healthy, on a live node): "slot node container" lines.
running() {
  tasks "$1" | jq -r '.[] | select(.history == false and .state == "running")
    | "\(.slot) \(.node) \(.container_id)"'
}
# Waits until service $1 runs $2 healthy replicas, one per slot, at most $3 seconds.
wait_running() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(running "$1" | awk '{ print $1 }' | sort -u | wc -l)" -eq "$2" ] && return 0
    sleep 0.2
  done
  return 1
}
# Deploys stack $1 from the YAML on standard input, through node $CLI_NODE.
deploy() {
  docker exec -i "$(node_name "$CLI_NODE")" sh -c "cat >/root/$1.yml"
  cli stack deploy -c "/root/$1.yml" "$1" >/dev/null
}

# Needs jq for `service ps --format json`; installs it when absent (CI machines are Debian).
ensure_jq() {
  command -v jq >/dev/null && return 0
  step "apt-get install jq"
  apt-get install -y -qq jq >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq jq >/dev/null; }
}

# Prints the figures and exits non-zero if a check failed.
finish() {
  say ""
  say "figures:"
  for f in "${figures[@]}"; do
    printf '  %-66s %s\n' "${f%%|*}" "${f#*|}"
  done
  if [ "$failures" -gt 0 ]; then
    die "$failures check(s) failed"
  fi
  say "all checks passed"
}

# shellcheck shell=bash
# Shared by testnet/up, testnet/add and testnet/down (sourced, not run): the testnet's Docker
# network, its nodes (containers shoal-nI, each with its own Docker engine and shoal agent) and
# their volumes. Everything it makes carries the label shoal.testnet=1, which is what down removes.
# See docs/testnet.md.

NETWORK=shoal-testnet
LABEL=shoal.testnet=1
NODE_IMAGE=shoal-node:latest
DEMO_IMAGES=(shoal-demo:v1 shoal-demo:v2 shoal-demo:broken shoal-demo:latest)
GOSSIP_PORT=7946
# A node's host number in the subnet is this plus its index: shoal-n1 is .11 in a /16's first /24.
HOST_OFFSET=10

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# The flags a nested Docker engine needs here: `--privileged` fails on these machines (their
# capability set lacks CAP_SYS_RESOURCE), so: every capability but that one, no seccomp, AppArmor
# or masked /proc and /sys paths, access to every device, and /var/lib/docker on a volume (overlay2
# cannot stack on the container's own overlay). `--init` reaps what the node's processes leave, and
# /run is a tmpfs so that no pid file outlives a `docker kill`.
# shellcheck disable=SC2054 # the commas belong to --tmpfs options
NESTED_FLAGS=(
  --cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --security-opt systempaths=unconfined
  --device-cgroup-rule 'a *:* rwm'
  --init --tmpfs /run:rw,exec,nosuid,mode=755 --tmpfs /tmp:rw,exec,nosuid,mode=1777
)

require_docker() {
  command -v docker >/dev/null || die "no docker client"
  docker info >/dev/null 2>&1 || die "the Docker daemon does not answer"
}

# Builds (or brings up to date) the images the testnet runs.
ensure_images() {
  # Always: build-images is idempotent (cargo and Docker's cache skip what did not change), and an
  # image left by an older tree would run an older agent than the code under test.
  testnet/build-images
}

# dotted quad <-> integer
ip_to_int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) + (b << 16) + (c << 8) + d))
}
int_to_ip() {
  echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"
}

# The network's subnet, e.g. 172.18.0.0/16.
subnet() {
  docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' "$NETWORK"
}

# Creates the network unless it exists. Nodes need fixed addresses (Docker would give a restarted
# node a new one, and its peers know it by address), which Docker allows only on a network created
# with an explicit subnet. So Docker picks a free subnet for a throw-away network first, and the
# real one is created with that subnet: no collision with any other network of this engine.
ensure_network() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    [ "$(docker network inspect -f '{{index .Labels "shoal.testnet"}}' "$NETWORK")" = 1 ] \
      || die "a network named $NETWORK exists that testnet/up did not make; remove it first"
    return
  fi
  local probe=$NETWORK-probe-$$ chosen
  docker network create --label "$LABEL" "$probe" >/dev/null
  chosen=$(docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' "$probe")
  docker network rm "$probe" >/dev/null
  if ! [[ "$chosen" =~ /([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -gt 24 ]; then
    die "Docker chose the subnet $chosen, smaller than a /24"
  fi
  docker network create --label "$LABEL" --subnet "$chosen" "$NETWORK" >/dev/null
  step "network $NETWORK: $chosen"
}

# The fixed address of node I.
node_ip() {
  local net base
  net=$(subnet)
  base=$(ip_to_int "${net%/*}")
  int_to_ip $((base + HOST_OFFSET + $1))
}

node_name() { echo "shoal-n$1"; }

# The indexes of the nodes that exist (running or not), in order.
node_indexes() {
  docker ps -a --filter "label=shoal.testnet.node" --format '{{.Label "shoal.testnet.node"}}' \
    | sort -n
}

node_state() { # I -> running | exited | ... | absent
  local state
  state=$(docker container inspect -f '{{.State.Status}}' "$(node_name "$1")" 2>/dev/null) \
    || state=absent
  echo "$state"
}

# Starts node I (creating it, its volume and the network as needed); $2 = seeds ADDR:PORT to join
# through on its first start (none for the first node), $3 = the cluster's join token for them.
start_node() {
  local i=$1 seeds=${2:-} token=${3:-} name ip volume
  name=$(node_name "$i")
  case $(node_state "$i") in
    running) say "$name runs already"; return ;;
    absent) ;;
    *) docker start "$name" >/dev/null; say "$name started again"; return ;;
  esac
  ip=$(node_ip "$i")
  volume=$name-docker
  docker volume create --label "$LABEL" "$volume" >/dev/null
  local out
  # (--dns 127.0.0.1 makes the client warn that localhost DNS may fail: that is the point.)
  out=$(docker run -d --name "$name" --hostname "$name" \
    --label "$LABEL" --label "shoal.testnet.node=$i" \
    --network "$NETWORK" --ip "$ip" \
    --dns 127.0.0.1 \
    "${NESTED_FLAGS[@]}" \
    -v "$volume:/var/lib/docker" \
    --stop-timeout 30 \
    -e "SHOAL_NODE_NAME=$name" \
    -e "SHOAL_NODE_ADVERTISE=$ip:$GOSSIP_PORT" \
    -e "SHOAL_NODE_LISTEN=0.0.0.0:$GOSSIP_PORT" \
    -e "SHOAL_NODE_JOIN=$seeds" \
    -e "SHOAL_TOKEN=$token" \
    -e "SHOAL_NODE_LABELS=testnet.node=$i zone=z$(((i - 1) % 2 + 1))" \
    -e "SHOAL_LOG=${SHOAL_LOG:-info}" \
    "$NODE_IMAGE" 2>&1) || die "starting $name: $out"
  say "$name created at $ip"
}

# Waits until node I's engine answers (the container must run).
wait_engine() {
  local i=$1 name deadline=$((SECONDS + 60))
  name=$(node_name "$i")
  until docker exec "$name" docker version >/dev/null 2>&1; do
    [ "$(node_state "$i")" = running ] || { docker logs --tail 30 "$name" >&2; die "$name stopped"; }
    [ $SECONDS -lt $deadline ] || { docker logs --tail 30 "$name" >&2; die "the engine of $name does not answer"; }
    sleep 0.2
  done
}

# Loads the demo images into node I unless it has them already (same image ids). $1 = index,
# $2 = a `docker save` archive of them.
load_images() {
  local i=$1 archive=$2 name image want have stale=0
  name=$(node_name "$i")
  for image in "${DEMO_IMAGES[@]}"; do
    want=$(docker image inspect -f '{{.Id}}' "$image")
    have=$(docker exec "$name" docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    [ "$want" = "$have" ] || stale=1
  done
  [ $stale = 1 ] || return 0
  docker exec -i "$name" docker load -q <"$archive" >/dev/null
  say "$name: loaded ${DEMO_IMAGES[*]}"
}

# Saves the demo images to a file (in $2, a directory) and prints its path.
save_images() {
  local archive=$1/demo-images.tar
  docker save -o "$archive" "${DEMO_IMAGES[@]}"
  echo "$archive"
}

# The cluster's join token, asked of node I's agent (waits up to 60 s for it to answer).
join_token() {
  local i=$1 name token deadline=$((SECONDS + 60))
  name=$(node_name "$i")
  until token=$(docker exec "$name" shoal cluster join-token -q 2>/dev/null); do
    [ $SECONDS -lt $deadline ] || { docker logs --tail 30 "$name" >&2; die "$name gives no join token"; }
    sleep 0.2
  done
  echo "$token"
}

# How many nodes node I's agent reports ready (0 if it does not answer).
ready_count() {
  docker exec "$(node_name "$1")" shoal node ls --format json 2>/dev/null \
    | grep -c '"status": *"ready"' || true
}

# Waits until each node in $2.. sees $1 ready nodes, at most $WAIT_READY seconds (default 90).
wait_ready() {
  local want=$1 i deadline=$((SECONDS + ${WAIT_READY:-90})) pending
  shift
  while :; do
    pending=()
    for i in "$@"; do
      [ "$(ready_count "$i")" -ge "$want" ] || pending+=("$(node_name "$i")")
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      for i in "$@"; do
        say "--- $(node_name "$i"): node ls" >&2
        docker exec "$(node_name "$i")" shoal node ls >&2 || true
        say "--- $(node_name "$i"): the end of its log" >&2
        docker logs --tail 15 "$(node_name "$i")" >&2 || true
      done
      die "still waiting for ${pending[*]} to see $want ready nodes"
    fi
    sleep 0.5
  done
}

# The first running node's index (a seed for a joining node), or nothing.
first_running() {
  local i
  for i in $(node_indexes); do
    [ "$(node_state "$i")" = running ] && { echo "$i"; return; }
  done
}

# What to do next.
print_summary() {
  local i name
  say ""
  say "The testnet ($NETWORK, $(subnet)):"
  for i in $(node_indexes); do
    name=$(node_name "$i")
    printf '  %-10s %-15s %s\n' "$name" "$(node_ip "$i")" "$(node_state "$i")"
  done
  cat <<EOT

  CLI on node I:      docker exec shoal-nI shoal node ls        (also: shoal service ..., shoal stack ...)
  Engine of node I:   docker exec shoal-nI docker ps
  Logs of node I:     docker logs shoal-nI   (agent);   docker exec shoal-nI cat /var/log/dockerd.log
  Published ports:    from this machine, at the node's address above, e.g. curl $(node_ip "$(node_indexes | head -n1)"):8080/
  Kill / restart:     docker kill shoal-nI; docker start shoal-nI
  More nodes:         testnet/add        Remove it all: testnet/down
  Partitions, pauses and the rest: docs/testnet.md
EOT
}

#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine (run as root):
#   Docker engine (Debian's docker.io) installed and answering, debootstrap for a local base
#   image, the Python venv (.venv) with the project and its tools, and the project's images
#   (worker, job, broker, database, host, registry) built from images/.
# A second run with nothing changed installs and rebuilds nothing: each image carries the digest
# of its inputs in label io.moonmind.codex.source-digest and is rebuilt only when that changes.
#
# Environment:
#   MOONMIND_CODEX_BASE_IMAGE    registry base to build from (e.g. debian:bookworm-slim);
#                                default: a local debootstrap import, moonmind-codex/base:bookworm
#   MOONMIND_CODEX_EXTRA_CA_DIR  directory of extra *.crt CA certificates trusted during builds
#                                (default /usr/local/share/ca-certificates)
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/setup.sh [--no-images | --images-only] [--only IMAGE[,IMAGE]] [--save-archives DIR]

  --no-images          engine and venv only
  --images-only        images only (engine must already answer)
  --only LIST          build only these images (worker, job, broker, database, host, registry)
  --save-archives DIR  also write DIR/<image>.tar (docker save) for air-gapped hosts and Molecule;
                       an archive is rewritten only when its image changed
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
start=$SECONDS
do_engine=1 do_venv=1 do_images=1
only="worker,job,broker,database,host,registry"
archives=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-images) do_images=0 ;;
    --images-only) do_engine=0; do_venv=0 ;;
    --only) only="${2:?--only needs a list such as worker,job}"; shift ;;
    --save-archives) archives="${2:?--save-archives needs a directory}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
  esac
  shift
done
for name in ${only//,/ }; do
  case "$name" in
    worker | job | broker | database | host | registry) ;;
    *) echo "setup.sh: unknown image '$name' in --only (known: worker, job, broker, database, host, registry)" >&2
       exit 64 ;;
  esac
done

say() { printf '[setup %3ds] %s\n' "$((SECONDS - start))" "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
  if ! command -v dockerd >/dev/null 2>&1; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      say "Docker engine answers (not managed here): leaving it alone"
      return
    fi
    say "installing Debian's docker.io"
    apt_install docker.io
  fi
  if docker info >/dev/null 2>&1; then
    say "Docker engine answers: $(docker version --format '{{.Server.Version}}')"
    return
  fi
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    say "starting docker.service"
    systemctl start docker
  else
    # No systemd as PID 1 (containers, CI sandboxes): start the daemon by hand, detached.
    say "starting dockerd (no systemd here); log in /var/log/dockerd.log"
    setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      say "Docker engine answers: $(docker version --format '{{.Server.Version}}')"
      return
    fi
    sleep 1
  done
  die "the Docker engine did not answer within 60 s; see /var/log/dockerd.log"
}

# The run store's tests start a throw-away PostgreSQL cluster (harness/postgres.py).
ensure_postgresql() {
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    return
  fi
  say "installing Debian's postgresql (for the run store's tests)"
  apt_install postgresql
}

ensure_venv() {
  local stamp=.venv/.moonmind-codex-installed want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "venv up to date (.venv)"
    return
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  say "installing the project and its tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
  say "venv ready"
}

ensure_base_image() {
  if [ -n "${MOONMIND_CODEX_BASE_IMAGE:-}" ]; then
    base_image=$MOONMIND_CODEX_BASE_IMAGE
    if ! docker image inspect "$base_image" >/dev/null 2>&1; then
      say "pulling base image $base_image"
      docker pull -q "$base_image" >/dev/null || die "cannot pull $base_image; unset" \
        "MOONMIND_CODEX_BASE_IMAGE to build a local base with debootstrap instead"
    fi
    return
  fi
  base_image=moonmind-codex/base:bookworm
  if docker image inspect "$base_image" >/dev/null 2>&1; then
    say "base image $base_image present"
    return
  fi
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  # Global, not local: the EXIT trap runs after this function has returned.
  rootfs=$(mktemp -d /var/tmp/moonmind-codex-rootfs.XXXXXX)
  trap 'rm -rf "${rootfs:-}"' EXIT
  say "debootstrap bookworm (minbase) into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" >/var/tmp/moonmind-codex-debootstrap.log 2>&1 \
    || die "debootstrap failed; see /var/tmp/moonmind-codex-debootstrap.log"
  tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "base image $base_image imported"
}

stage_ca_certificates() {
  local src=${MOONMIND_CODEX_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
  find images/ca-certificates -maxdepth 1 -name '*.crt' -delete
  if [ -d "$src" ]; then
    find "$src" -maxdepth 1 -name '*.crt' -exec cp {} images/ca-certificates/ \;
  elif [ -n "${MOONMIND_CODEX_EXTRA_CA_DIR:-}" ]; then
    die "MOONMIND_CODEX_EXTRA_CA_DIR=$src is not a directory"
  fi
}

# Files whose content decides an image; anything else changing does not trigger a rebuild.
image_inputs() {
  case "$1" in
    worker) echo "images/worker images/ca-certificates pyproject.toml README.md moonmind_codex" ;;
    job) echo "images/job images/ca-certificates moonmind_codex" ;;
    broker) echo "images/broker" ;;
    database) echo "images/database" ;;
    host) echo "images/host images/ca-certificates" ;;
    registry) echo "images/registry" ;;
  esac
}

source_digest() {
  local base_id
  base_id=$(docker image inspect --format '{{.Id}}' "$base_image")
  # shellcheck disable=SC2046 # word splitting of the input list is intended
  {
    echo "base=$base_id"
    find $(image_inputs "$1") -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

build_image() {
  local name=$1 tag="moonmind-codex/$1:latest" digest current
  digest=$(source_digest "$name")
  current=$(docker image inspect --format '{{index .Config.Labels "io.moonmind.codex.source-digest"}}' \
    "$tag" 2>/dev/null || true)
  if [ "$current" = "$digest" ]; then
    say "image $tag up to date"
  else
    say "building $tag"
    local t0=$SECONDS log="/var/tmp/moonmind-codex-build-$name.log"
    if ! docker build -f "images/$name/Dockerfile" -t "$tag" \
        --build-arg "BASE_IMAGE=$base_image" \
        --label "io.moonmind.codex.source-digest=$digest" . >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "building $tag failed; full log in $log"
    fi
    say "built $tag in $((SECONDS - t0)) s"
  fi
  if [ -n "$archives" ]; then
    mkdir -p "$archives"
    local id stamp="$archives/$name.tar.id"
    id=$(docker image inspect --format '{{.Id}}' "$tag")
    if [ ! -f "$archives/$name.tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$id" ]; then
      docker save -o "$archives/$name.tar" "$tag"
      echo "$id" >"$stamp"
      say "saved $archives/$name.tar"
    fi
  fi
}

# The job containers' network as the role moonmind_codex_job_network makes it, so that workers,
# tests and benchmarks on this machine find it; its firewall is the playbook's alone.
ensure_job_network() {
  local name=moonmind_codex_jobs
  if docker network inspect "$name" >/dev/null 2>&1; then return; fi
  docker network create --driver bridge --label io.moonmind.codex.role=job-network \
    -o com.docker.network.bridge.name=mmc-jobs0 -o com.docker.network.bridge.enable_icc=false \
    -o com.docker.network.bridge.enable_ip_masquerade=true "$name" >/dev/null
  say "made network $name (without its firewall: playbooks/site.yml adds that)"
}

if [ "$do_engine" = 1 ]; then ensure_engine; fi
if ! docker info >/dev/null 2>&1; then
  die "the Docker engine does not answer; run scripts/setup.sh without --images-only"
fi
if [ "$do_venv" = 1 ]; then ensure_postgresql; ensure_venv; fi
if [ "$do_images" = 1 ]; then
  ensure_base_image
  stage_ca_certificates
  for name in ${only//,/ }; do build_image "$name"; done
  ensure_job_network
fi
say "done"

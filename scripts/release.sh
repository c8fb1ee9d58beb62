#!/usr/bin/env bash
# One release, one version: the Python wheel, the Ansible collection and the image archives that
# playbooks/site.yml loads on air-gapped hosts (moonmind_codex_images_source: load), written to
# one directory with a SHA256SUMS file over all of them.
#
# The version is pyproject.toml's; galaxy.yml must carry the same (refused before anything is
# built otherwise). The wheel and the collection are built from a copy of the files git knows
# (tracked, or new and not ignored), so the build's own files never land in the checkout.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/release.sh [--out DIR] [--images LIST | --no-images]

  --out DIR       where the release goes (default: dist/moonmind-codex-<version>); it must not
                  hold a release already
  --images LIST   the images to archive (default: worker,job,broker,database)
  --no-images     the wheel and the collection only
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
venv="$repo/.venv/bin"
out=""
images="worker,job,broker,database"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift ;;
    --images) images="${2:?--images needs a list, e.g. worker,job}"; shift ;;
    --no-images) images="" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "release: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
  esac
  shift
done

version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' pyproject.toml | head -n 1)
galaxy_version=$(sed -n 's/^version: *\([^ ]*\)$/\1/p' galaxy.yml | head -n 1)
if [ -z "$version" ] || [ "$version" != "$galaxy_version" ]; then
  echo "release: pyproject.toml says version '$version' and galaxy.yml '$galaxy_version';" \
    "set both to the release's version" >&2
  exit 65
fi
out="${out:-dist/moonmind-codex-$version}"
if [ -e "$out/SHA256SUMS" ]; then
  echo "release: $out already holds a release (SHA256SUMS); remove it or give --out" >&2
  exit 73
fi
for image in ${images//,/ }; do
  case "$image" in
    worker | job | broker | database) ;;
    *) echo "release: '$image' is not a fleet image (worker, job, broker, database)" >&2; exit 64 ;;
  esac
done
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  echo "release: note: the tree has uncommitted changes; they are in this build" >&2
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' name; do
  if [ -f "$name" ] && [ ! -L "$name" ]; then
    mkdir -p "$work/src/$(dirname "$name")"
    cp -p "$name" "$work/src/$name"
  fi
done

echo "== wheel moonmind-codex $version"
(cd "$work" && "$venv/python" -m pip wheel --no-deps -q -w "$out" "$work/src")
echo "== collection moonmind.codex $version"
(cd "$work/src" && "$venv/ansible-galaxy" collection build --output-path "$out" >/dev/null)

if [ -n "$images" ]; then
  echo "== images $images"
  bash scripts/setup.sh --images-only --only "$images" --save-archives "$out/images"
  # The version the archives belong to, and the Codex CLI each job image carries.
  for image in ${images//,/ }; do
    printf '%s %s %s\n' "$image" "$(cat "$out/images/$image.tar.id")" "$version" \
      >>"$out/images/IMAGES"
  done
fi

# Written last, and whole: a directory with SHA256SUMS holds a finished release.
(cd "$out" && find . -type f -printf '%P\n' | sort | xargs sha256sum) >"$work/SHA256SUMS"
mv "$work/SHA256SUMS" "$out/SHA256SUMS"
echo "== release $version in $out (check: cd $out && sha256sum -c SHA256SUMS)"

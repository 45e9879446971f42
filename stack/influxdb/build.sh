#!/usr/bin/env bash
# Build InfluxDB OSS 2.x `influxd` from its Go module, without UI assets.
#
#   stack/influxdb/build.sh [VERSION]      (default v2.9.1)
#
# Result: ~/.cache/tokenpulse/influxdb/<VERSION>/influxd. Idempotent: exits at once when it exists.
# Go and cargo caches live under ~/.cache/tokenpulse/go so a second build (or CI) reuses them.
# flux's Rust library is built by InfluxData's pkg-config wrapper. We pre-fill the wrapper's
# writable copy of the flux module with two changes so the installed stable rustc builds it:
#   - rust-toolchain.toml removed (it pins 1.83, which cannot be downloaded here);
#   - the `deny(warnings, missing_docs)` crate attribute removed (new rustc lints break the build).
set -euo pipefail

VERSION="${1:-v2.9.1}"
CACHE="${TOKENPULSE_CACHE:-$HOME/.cache/tokenpulse}"
OUT_DIR="$CACHE/influxdb/$VERSION"
OUT="$OUT_DIR/influxd"

if [[ -x "$OUT" ]]; then
  echo "influxd $VERSION already built: $OUT"
  exit 0
fi

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' not found: $2" >&2; exit 3; }
}
need go "install Go 1.25+ (https://go.dev/dl or 'apt-get install golang')"
need cargo "install Rust with rustup (stable toolchain)"
need gcc "install a C compiler ('apt-get install gcc')"
need pkg-config "install pkg-config ('apt-get install pkgconf')"

export GOTOOLCHAIN=local
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS=-mod=mod
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
export CARGO_NET_RETRY=5
mkdir -p "$GOMODCACHE" "$GOCACHE" "$OUT_DIR"

WORK="$CACHE/influxdb/src-$VERSION"
start=$(date +%s)

mod_dir() {  # print the module cache directory of module@version, downloading it if needed
  (cd "$CACHE" && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
}

echo "==> downloading github.com/influxdata/influxdb/v2@$VERSION"
SRC=$(mod_dir "github.com/influxdata/influxdb/v2@$VERSION")
[[ -n "$SRC" ]] || { echo "error: could not download influxdb $VERSION" >&2; exit 4; }

if [[ ! -f "$WORK/go.mod" ]]; then
  rm -rf "$WORK.tmp"
  cp -r "$SRC" "$WORK.tmp"
  chmod -R u+w "$WORK.tmp"
  mv "$WORK.tmp" "$WORK"
fi

FLUX_VERSION=$(awk '$1=="github.com/influxdata/flux" {print $2; exit}' "$WORK/go.mod")
PKGCONFIG_VERSION=$(awk '$1=="github.com/influxdata/pkg-config" {print $2; exit}' "$WORK/go.mod")
echo "==> flux $FLUX_VERSION, pkg-config wrapper $PKGCONFIG_VERSION"

FLUX_SRC=$(mod_dir "github.com/influxdata/flux@$FLUX_VERSION")
FLUX_COPY="$GOCACHE/pkgconfig/github.com/influxdata/flux@$FLUX_VERSION"
if [[ ! -f "$FLUX_COPY/.tokenpulse-patched" ]]; then
  echo "==> preparing a patched copy of flux in $FLUX_COPY"
  rm -rf "$FLUX_COPY"
  mkdir -p "$(dirname "$FLUX_COPY")"
  cp -r "$FLUX_SRC" "$FLUX_COPY"
  chmod -R u+w "$FLUX_COPY"
  rm -f "$FLUX_COPY/rust-toolchain.toml" "$FLUX_COPY/rust-toolchain" "$FLUX_COPY/libflux/rust-toolchain.toml"
  for lib in "$FLUX_COPY"/libflux/flux-core/src/lib.rs "$FLUX_COPY"/libflux/flux/src/lib.rs; do
    sed -i 's/^#!\[cfg_attr(feature = "strict", deny(warnings, missing_docs))\]$//' "$lib"
  done
  touch "$FLUX_COPY/.tokenpulse-patched"
fi

echo "==> building the pkg-config wrapper"
WRAPPER_DIR="$CACHE/influxdb/pkg-config-$PKGCONFIG_VERSION"
if [[ ! -x "$WRAPPER_DIR/pkg-config" ]]; then
  WRAPPER_SRC=$(mod_dir "github.com/influxdata/pkg-config@$PKGCONFIG_VERSION")
  mkdir -p "$WRAPPER_DIR"
  (cd "$WRAPPER_SRC" && go build -o "$WRAPPER_DIR/pkg-config" .)
fi
export PKG_CONFIG="$WRAPPER_DIR/pkg-config"

echo "==> building influxd (cgo + cargo build of libflux; the first build takes a while)"
cd "$WORK"
go build -tags sqlite_foreign_keys,sqlite_json \
  -ldflags "-s -w -X main.version=${VERSION#v} -X main.commit=module -X main.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -o "$OUT.tmp" ./cmd/influxd
mv "$OUT.tmp" "$OUT"
echo "==> built $OUT in $(( $(date +%s) - start )) s"

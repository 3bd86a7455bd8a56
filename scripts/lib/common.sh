# Shared by scripts/up and scripts/test: logging, dependency installation and the build.
# Sourced, not run. Expects ROOT to be the repository root.

# Debian 12 packages tickpool needs to build, run and test. Keep in sync with the Dockerfile
# (which calls this same function).
TP_BUILD_PACKAGES="build-essential meson ninja-build pkg-config libev-dev libhiredis-dev libpq-dev
 libmsgpack-dev libmbedtls-dev node-llhttp libjansson-dev libinih-dev libargon2-dev"
TP_RUN_PACKAGES="redis-server postgresql openssl ca-certificates procps"
TP_TEST_PACKAGES="libcmocka-dev git clang clang-format libclang-rt-14-dev python3 python3-msgpack python3-websocket
 python3-redis python3-psycopg2 chromium wrk prometheus iproute2"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
    else die "need root (or sudo) to run: $*"; fi
}

# install_packages PKG...: installs the Debian packages that are not installed yet. A failure
# names the packages (and which of them the apt sources do not know) and the command to retry,
# with apt's own last lines above it.
install_packages() {
    local missing=() p log unknown=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    log=$(mktemp /tmp/tickpool-apt-XXXXXX.log)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1; then
        tail -20 "$log" >&2
        die "apt-get update failed (needed to install: ${missing[*]}); check the apt sources and network, then retry with: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >"$log" 2>&1; then
        tail -20 "$log" >&2
        for p in "${missing[@]}"; do
            apt-cache show "$p" >/dev/null 2>&1 || unknown+=("$p")
        done
        [ ${#unknown[@]} -gt 0 ] &&
            printf 'error: not in the apt sources: %s\n' "${unknown[*]}" >&2
        die "installing Debian packages failed: ${missing[*]} (apt's output above; full log $log); retry with: apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    rm -f "$log"
}

# install_node: Node.js and npm for the web client and the browser tests. Debian's packages are
# used only when no node/npm is installed yet: a machine may already carry a newer Node.js whose
# npm conflicts with Debian's.
install_node() {
    command -v node >/dev/null && command -v npm >/dev/null && return 0
    install_packages nodejs npm
}

# npm_install DIR: installs DIR's npm packages exactly as its package-lock.json pins them.
npm_install() {
    local dir=$1
    [ -f "$dir/package.json" ] || return 0
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.stamp" ]; then
        say "installing npm packages in ${dir#$ROOT/} (from package-lock.json)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $dir"
        touch "$dir/node_modules/.stamp"
    fi
}

# Meson dependency name -> the Debian package that provides it, so a failed configure can name
# the package to install (and the list in this file that should carry it).
TP_MESON_DEPS="ev:libev-dev hiredis:libhiredis-dev libpq:libpq-dev msgpack:libmsgpack-dev
 jansson:libjansson-dev inih:libinih-dev libargon2:libargon2-dev
 mbedtls:libmbedtls-dev mbedx509:libmbedtls-dev mbedcrypto:libmbedtls-dev cmocka:libcmocka-dev"

# meson_failure LOG DIR: explains a failed `meson setup` and exits.
meson_failure() {
    local log=$1 dir=$2 name pair pkg=""
    cat "$log" >&2
    name=$(sed -n -e 's/.*Dependency "\([^"]*\)" not found.*/\1/p' \
        -e "s/.*C library '\([^']*\)' not found.*/\1/p" "$log" | head -1)
    if [ -n "$name" ]; then
        for pair in $TP_MESON_DEPS; do [ "${pair%%:*}" = "$name" ] && pkg=${pair#*:}; done
        [ -n "$pkg" ] && die "meson setup failed for $dir: $name not found; it comes with the Debian package $pkg (apt-get install -y --no-install-recommends $pkg; scripts/lib/common.sh's package lists must carry it)"
        die "meson setup failed for $dir: $name not found (which Debian package provides it? add that package to scripts/lib/common.sh)"
    fi
    die "meson setup failed for $dir (log: $log)"
}

# build DIR [MESON_OPTIONS...]: configures (always, so new source files are picked up) and builds.
# A build directory that meson cannot reconfigure (half-configured by a failed first setup, made
# by another meson version, or moved from another path) is wiped and configured afresh: a build
# directory holds nothing but derived files.
build() {
    local dir=$1; shift
    local log="$ROOT/$dir.setup.log"
    if [ -d "$ROOT/$dir" ] && [ ! -f "$ROOT/$dir/meson-private/coredata.dat" ]; then
        say "$dir is not a complete meson build directory (an earlier setup failed?): configuring it afresh"
        rm -rf "${ROOT:?}/$dir"
    fi
    if [ -d "$ROOT/$dir" ]; then
        if ! meson setup --reconfigure "$ROOT/$dir" "$ROOT" "$@" >"$log" 2>&1; then
            say "$dir could not be reconfigured (log: $dir.setup.log): configuring it afresh"
            rm -rf "${ROOT:?}/$dir"
        fi
    fi
    if [ ! -d "$ROOT/$dir" ]; then
        meson setup "$ROOT/$dir" "$ROOT" "$@" >"$log" 2>&1 || {
            rm -rf "${ROOT:?}/$dir" # never leave a half-configured directory behind
            meson_failure "$log" "$dir"
        }
    fi
    say "building $dir"
    ninja -C "$ROOT/$dir" >"$ROOT/$dir.build.log" 2>&1 ||
        { tail -40 "$ROOT/$dir.build.log"; die "build failed for $dir (log: $dir.build.log)"; }
}

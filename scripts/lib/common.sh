# Shared by scripts/up and scripts/test: logging, dependency installation and the build.
# Sourced, not run. Expects ROOT to be the repository root.

# Debian 12 packages tickpool needs to build, run and test. Keep in sync with the Dockerfile
# (which calls this same function).
TP_BUILD_PACKAGES="build-essential meson ninja-build pkg-config libev-dev libhiredis-dev libpq-dev
 libmsgpack-dev libwslay-dev libmbedtls-dev node-llhttp libjansson-dev libinih-dev libargon2-dev"
TP_RUN_PACKAGES="redis-server postgresql openssl ca-certificates procps"
TP_TEST_PACKAGES="libcmocka-dev clang clang-format libclang-rt-14-dev python3 python3-msgpack python3-websocket
 python3-redis python3-psycopg2 chromium wrk prometheus"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
    else die "need root (or sudo) to run: $*"; fi
}

# install_packages PKG...: installs the Debian packages that are not installed yet.
install_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
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

# build DIR [MESON_OPTIONS...]: configures (always, so new source files are picked up) and builds.
build() {
    local dir=$1; shift
    if [ -d "$ROOT/$dir" ]; then
        meson setup --reconfigure "$ROOT/$dir" "$ROOT" "$@" >"$ROOT/$dir.setup.log" 2>&1 ||
            { cat "$ROOT/$dir.setup.log"; die "meson setup failed for $dir"; }
    else
        meson setup "$ROOT/$dir" "$ROOT" "$@" >"$ROOT/$dir.setup.log" 2>&1 ||
            { cat "$ROOT/$dir.setup.log"; die "meson setup failed for $dir"; }
    fi
    say "building $dir"
    ninja -C "$ROOT/$dir" >"$ROOT/$dir.build.log" 2>&1 ||
        { tail -40 "$ROOT/$dir.build.log"; die "build failed for $dir (log: $dir.build.log)"; }
}

#!/bin/sh
# Make sure the Debian packages the tests run for real are installed: rabbitmq-server,
# redis-server, prometheus (promtool and the server) and nodejs/npm (the schema checks of
# Kubernetes custom resources and of docs/asyncapi.json fetch their validators from the npm
# registry), openssl (certificates for the TLS tests). Idempotent; prints one line on success.
#
# As root it installs what is missing. The tests start their own processes on loopback, so the
# packages' system services must not run: a policy-rc.d forbids starting them during the install
# (sysvinit and systemd both honour it) and, under systemd, the units of packages installed here
# are disabled so they do not start at the next boot either.
set -eu

PACKAGES="rabbitmq-server redis-server prometheus nodejs npm openssl"

missing=""
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$missing rabbitmq-server"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing="$missing prometheus"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"

if [ -z "$missing" ]; then
    echo "system packages present: $PACKAGES"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian package(s):$missing; install them as root: sudo $0" >&2
    exit 1
fi

installed() {
    dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

# Units to disable afterwards: only those of packages this run installs, never a service the
# machine already had.
units=""
installed rabbitmq-server || units="$units rabbitmq-server.service"
installed erlang-base || units="$units epmd.socket epmd.service"
installed redis-server || units="$units redis-server.service"
installed prometheus || units="$units prometheus.service"

policy=/usr/sbin/policy-rc.d
saved_policy=""
if [ -e "$policy" ]; then
    saved_policy="$(mktemp)"
    cp -p "$policy" "$saved_policy"
fi
log="$(mktemp)"
restore_policy() {
    if [ -n "$saved_policy" ]; then
        cp -p "$saved_policy" "$policy"
        rm -f "$saved_policy"
    else
        rm -f "$policy"
    fi
}
trap restore_policy EXIT
trap 'exit 130' HUP INT TERM # run the EXIT trap on these too
printf '#!/bin/sh\n# scripts/ensure-system-packages.sh: start no service while installing\nexit 101\n' \
    >"$policy"
chmod 755 "$policy"

# shellcheck disable=SC2086  # $PACKAGES is a list of words
if ! {
    apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES
} >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "apt-get failed installing:$missing (full output: $log)" >&2
    exit 1
fi
rm -f "$log"

if [ -d /run/systemd/system ]; then
    for unit in $units; do
        systemctl disable --now --quiet "$unit" 2>/dev/null || true
    done
fi

echo "installed:$missing (system services not started${units:+; disabled:$units})"

#!/usr/bin/env bash
# Prepare this machine for NetServ, as root on Debian 12: the Debian packages, the
# virtualenv in <repo>/.venv, and a running Open vSwitch. Idempotent; when all is
# there it only checks (well under 2 s).
#
# Usage: tools/setup.sh [-q]     -q: say nothing when there is nothing to do
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.netserv-setup-stamp"
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
DEB_PACKAGES=(
    openvswitch-switch openvswitch-common mininet ethtool iperf3 iputils-ping iproute2
    procps python3-venv python3-dev gcc tcpdump chromium
)
QUIET=0
[[ ${1:-} == -q ]] && QUIET=1

say() { echo "setup: $*" >&2; }                  # something is being done: always shown
note() { ((QUIET)) || echo "setup: $*" >&2; }    # all is well: hidden with -q
die() { echo "setup: ERROR: $*" >&2; exit 1; }

LOG=$(mktemp /tmp/netserv-setup.XXXXXX)
POLICY_RC=""
cleanup() {
    [[ -n $POLICY_RC ]] && rm -f "$POLICY_RC"
    rm -f "$LOG"
}
trap cleanup EXIT

# Run a command with its output in $LOG; on failure show the end of it and stop.
logged() {
    local what=$1
    shift
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "$what failed: $*"
    fi
}

missing_debs() {
    local pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] ||
            echo "$pkg"
    done
}

install_debs() {
    local missing
    mapfile -t missing < <(missing_debs)
    if ((${#missing[@]} == 0)); then
        note "Debian packages present"
        return
    fi
    say "installing Debian packages: ${missing[*]}"
    # There is no init system to start services during the install, and OVS is
    # started below; policy-rc.d (101 = "not allowed") keeps postinst from trying.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        POLICY_RC=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
    fi
    export DEBIAN_FRONTEND=noninteractive
    logged "apt-get update" apt-get update -q
    logged "apt-get install" apt-get install -y -q --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_debs)
    ((${#missing[@]} == 0)) || die "still not installed after apt-get: ${missing[*]}"
}

setup_venv() {
    local want
    want=$(cat "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)
    if [[ -x $VENV/bin/python && -f $STAMP && $(<"$STAMP") == "$want" ]]; then
        note "virtualenv up to date ($VENV)"
        return
    fi
    command -v python3 >/dev/null || die "python3 is not on PATH"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "python3 on PATH is $(python3 -V 2>&1); NetServ needs 3.11 or newer"
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "creating virtualenv $VENV with $(command -v python3) ($(python3 -V 2>&1))"
        logged "creating the virtualenv" python3 -m venv --clear "$VENV"
    fi
    rm -f "$STAMP"
    local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
    local pbr
    pbr=$(grep -i '^pbr==' "$REPO/requirements.txt") || die "requirements.txt pins no pbr"
    say "installing Python packages into $VENV (takes a minute the first time)"
    # Ryu 4.34 builds only with setuptools<68 (get_script_args went away) and
    # needs pbr at build time, so it is built against the venv's own tools.
    logged "installing build tools" "${pip[@]}" "setuptools<68" wheel "$pbr"
    logged "installing ryu" "${pip[@]}" --no-build-isolation ryu==4.34
    logged "installing requirements.txt" "${pip[@]}" -r "$REPO/requirements.txt"
    logged "installing netserv (editable)" \
        "${pip[@]}" --no-build-isolation --no-deps -e "$REPO"
    logged "checking the virtualenv" \
        "$VENV/bin/python" -c 'import ryu, mininet, eventlet, scapy, prometheus_client, topo, tools'
    [[ -x $VENV/bin/netserv ]] || die "$VENV/bin/netserv was not installed"
    echo "$want" >"$STAMP"
}

# The start-up hook that lets the virtualenv's own ryu-manager run controller.app beside
# stock Ryu apps (controller/ryucompat.py). Checked on every run: cheap, and a venv made
# before the hook existed gets it too.
install_ryu_hook() {
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if ! cmp -s "$REPO/tools/netserv-ryu.pth" "$site/netserv-ryu.pth"; then
        say "installing the ryu-manager start-up hook into $site"
        cp "$REPO/tools/netserv-ryu.pth" "$site/netserv-ryu.pth"
    fi
}

# The MLFFR benchmark's packet generator (tools/pktgen.c): a Python loop cannot offer
# the rates the switch forwards. Rebuilt when the source is newer than the binary.
build_pktgen() {
    local src="$REPO/tools/pktgen.c" bin="$VENV/bin/netserv-pktgen"
    if [[ -x $bin && $bin -nt $src ]]; then
        note "packet generator built ($bin)"
        return
    fi
    say "building the packet generator $bin"
    logged "building $src" gcc -O2 -Wall -Werror -o "$bin" "$src"
}

ovs_running() {
    ovs-vsctl --timeout=3 show >/dev/null 2>&1 &&
        ovs-appctl --timeout=3 -t ovs-vswitchd version >/dev/null 2>&1
}

start_ovs() {
    if ovs_running; then
        note "Open vSwitch running"
        return
    fi
    # One machine, one Open vSwitch: set-ups of two clones at once must not both start
    # it (the second ovs-ctl fails on the first's pid file).
    exec 8>/run/netserv-ovs-start.lock
    flock -w 120 8 || die "another set-up has been starting Open vSwitch for 2 minutes"
    if ovs_running; then
        exec 8>&-
        note "Open vSwitch running"
        return
    fi
    [[ -x $OVS_CTL ]] || die "$OVS_CTL not found (is openvswitch-switch installed?)"
    say "starting Open vSwitch (ovsdb-server, ovs-vswitchd)"
    # Without an openvswitch kernel module ovs-ctl skips modprobe; bridges then use
    # the userspace (netdev) datapath. Its ulimit warning is harmless. The daemons
    # must not inherit the set-up locks (fds 9, 8): they would hold them for as long
    # as they run, and every later set-up would wait for them in vain.
    logged "ovs-ctl start" "$OVS_CTL" start --system-id=random 9>&- 8>&-
    exec 8>&-
    ovs_running || die "Open vSwitch does not answer after ovs-ctl start" \
        "(see /var/log/openvswitch/ovs-vswitchd.log and ovsdb-server.log)"
}

[[ $(id -u) -eq 0 ]] || die "run as root: it installs packages and starts Open vSwitch"
# Two runs at once (e.g. two ./netserv commands) would fight over apt and the venv.
exec 9>"/tmp/netserv-setup-$(echo "$REPO" | sha256sum | cut -c1-12).lock"
flock -w 900 9 || die "another tools/setup.sh of $REPO has been running for 15 minutes"
install_debs
setup_venv
install_ryu_hook
build_pktgen
start_ovs
note "ready"

# Helpers of the system test (sourced by scripts/system-test): check accounting, a cached Debian 12
# root file system, and a systemd-nspawn container booted with systemd as PID 1.
#
# Container facts this relies on (see the platform notes): nspawn needs --keep-unit --register=no
# when the host's PID 1 is not systemd; its first child is a short-lived "outer child", so the
# container's PID 1 is the descendant whose comm is "systemd"; a SIGTERM sent before that systemd
# installed its handlers is lost, so shutdown retries; commands run in the container through
# nsenter into all its namespaces.

PASSED=0
FAILED=0
FAILURES=()

# pass NAME [DETAIL] / fail NAME [DETAIL]
pass() { PASSED=$((PASSED + 1)); echo "PASS: $1${2:+ — $2}"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "FAIL: $1${2:+ — $2}"; }

# check NAME COMMAND...: passes when COMMAND succeeds.
check() {
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# wait_until SECONDS COMMAND...: retries COMMAND every 0.5 s until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# ---- root file system -------------------------------------------------------------------------

ROOTFS_SUITE=bookworm
# The Debian mirror this machine's apt already uses (first URIs of debian.sources or sources.list).
apt_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    echo "$uri"
}
ROOTFS_MIRROR=${TWEETOSCOPE_DEBIAN_MIRROR:-$(apt_mirror)}
# systemd as PID 1 plus the package's run-time dependencies (procps for ExecReload's /bin/kill), so
# that installing the .deb needs no network; man-db lets `systemd-analyze verify` check the unit's
# Documentation= man pages.
ROOTFS_INCLUDE=systemd,systemd-sysv,dbus,procps,man-db,libyaml-0-2,librdkafka1,libsystemd0,zlib1g

# prepare_rootfs CACHE_DIR: prints the path of the cached minbase root file system, creating it
# (debootstrap, ~1.5 min, ~250 MB) when missing. The cache key covers suite, mirror and packages.
prepare_rootfs() {
    local cache=$1 key base
    key=$(printf '%s %s %s' "$ROOTFS_SUITE" "$ROOTFS_MIRROR" "$ROOTFS_INCLUDE" | sha256sum | cut -c1-12)
    base=$cache/$ROOTFS_SUITE-$key
    if [ ! -e "$base/.complete" ]; then
        echo "system-test: debootstrap $ROOTFS_SUITE (minbase + $ROOTFS_INCLUDE) into $base" >&2
        # An interrupted debootstrap leaves /proc (and others) mounted in base.tmp: unmount them
        # first, or rm fails on /proc and the new debootstrap on the half-made tree.
        local m
        for m in "$base.tmp" "$base"; do
            [ -d "$m" ] || continue
            findmnt -rn -o TARGET | grep -F "$m/" | sort -r | while read -r t; do umount -l "$t" || true; done
        done
        rm -rf "$base.tmp" "$base"
        mkdir -p "$cache"
        debootstrap --variant=minbase --include="$ROOTFS_INCLUDE" "$ROOTFS_SUITE" "$base.tmp" \
            "$ROOTFS_MIRROR" > "$cache/debootstrap.log" 2>&1 \
            || { tail -20 "$cache/debootstrap.log" >&2; return 1; }
        # Leave machine-id empty: systemd fills it at each boot of a fresh copy.
        : > "$base.tmp/etc/machine-id"
        touch "$base.tmp/.complete"
        mv "$base.tmp" "$base"
    else
        echo "system-test: cached root file system $base" >&2
    fi
    echo "$base"
}

# ---- container --------------------------------------------------------------------------------

CONTAINER_ROOT=
NSPAWN_PID=
CPID=

# boot_container ROOT LOG: boots systemd in ROOT and waits until the system is running.
boot_container() {
    CONTAINER_ROOT=$1
    local log=$2
    systemd-nspawn --keep-unit --register=no --console=passive -q -b -D "$CONTAINER_ROOT" \
        --machine=tweetoscope-test > "$log" 2>&1 &
    NSPAWN_PID=$!
    wait_until 30 find_container_init || { echo "system-test: no systemd in the container" >&2; cat "$log" >&2; return 1; }
    local state
    state=$(timeout 90 nsenter -t "$CPID" -a systemctl is-system-running --wait 2>/dev/null) || true
    echo "system-test: container booted (PID 1 = host PID $CPID), system $state" >&2
    [ "$state" = running ] || [ "$state" = degraded ]
}

# Sets CPID to the host PID of the container's systemd (a descendant of nspawn).
find_container_init() {
    local p q
    for p in $(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null); do
        for q in "$p" $(ps -o pid= --ppid "$p" 2>/dev/null); do
            if [ "$(cat "/proc/$q/comm" 2>/dev/null)" = systemd ]; then CPID=$q; return 0; fi
        done
    done
    return 1
}

# c COMMAND...: runs COMMAND in the container, with a clean environment.
c() {
    nsenter -t "$CPID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb \
        SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# prop UNIT PROPERTY: a unit property's value.
prop() { c systemctl show -p "$2" --value "$1"; }

# stop_container: powers the container off (SIGTERM to nspawn, repeated), then kills what is left.
stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    local _
    for _ in 1 2 3; do
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        wait_until 10 bash -c "! kill -0 $NSPAWN_PID 2>/dev/null" && break
    done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then kill -KILL "$NSPAWN_PID" 2>/dev/null || true; fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=
}

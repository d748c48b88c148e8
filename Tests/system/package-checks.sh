# The checks of the system test that run against a booted Debian 12 container (sourced by
# scripts/system-test after Tests/system/lib.sh; the container runs, CPID is its PID 1).
#
# run_package_checks DEB_IN_CONTAINER LOG_DIR

UNIT=tweetoscoped
CONF=/etc/tweetoscope.yaml
OUT=/var/lib/tweetoscope/out
CONF_ERROR_RE='/etc/tweetoscope\.yaml:[0-9]+:[0-9]+: error:'
STATUS_RE='^[0-9]+ stages, [0-9]+ tweets/s, [0-9]+ tweets, [0-9]+ open cascades'

# A journal cursor: entries after it are new.
cursor() { c journalctl -n 1 --show-cursor -o cat --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p'; }
# journal_since CURSOR [journalctl arguments]: the unit's journal after CURSOR, message text only.
journal_since() {
    local cur=$1; shift
    if [ -n "$cur" ]; then c journalctl -u "$UNIT" --no-pager -o cat --after-cursor="$cur" "$@"
    else c journalctl -u "$UNIT" --no-pager -o cat "$@"; fi
}
# journal_has CURSOR EXTENDED_REGEX: the unit logged a matching line after CURSOR.
journal_has() { journal_since "$1" | grep -Eq -- "$2"; }
is_running() { [ "$(prop $UNIT ActiveState)/$(prop $UNIT SubState)" = active/running ]; }
# tweets counted in the status line ("N stages, X tweets/s, T tweets, ...").
status_tweets() { prop $UNIT StatusText | sed -n 's/^[0-9]* stages, [0-9]* tweets\/s, \([0-9]*\) tweets.*/\1/p'; }
# exposure UNIT_ARGS...: the overall exposure printed by systemd-analyze security.
exposure_of() { sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'; }
le_2() { [ -n "$1" ] && awk -v x="$1" 'BEGIN { exit !(x <= 2.0) }'; }
# swift_libs_private LDD_OUTPUT: every Swift library resolves, once canonical, in /usr/lib/tweetoscope.
swift_libs_private() {
    local paths
    paths=$(awk '$1 ~ /^(libswift|libdispatch|libBlocksRuntime|libFoundation|libTweetoscopeCore|libTweetoscopeKafka)/ { print $3 }' <<<"$1" | sort -u)
    [ -n "$paths" ] || return 1
    # shellcheck disable=SC2086
    ! c realpath -m $paths | grep -v '^/usr/lib/tweetoscope/[^/]*$'
}
status_has_tweets() { [ -n "$(status_tweets)" ]; }
status_is_summary() { [[ "$(prop $UNIT StatusText)" =~ $STATUS_RE ]]; }
collector_logged() { [ -n "$(c journalctl -u $UNIT STAGE=collector -o cat --no-pager)" ]; }
# watchdog_pinged MONOTONIC_USEC: a WATCHDOG=1 arrived after that time.
watchdog_pinged() { [ "$(prop $UNIT WatchdogTimestampMonotonic)" -gt "$1" ]; }
# restarted_from PID: a new main process runs.
restarted_from() { local p; p=$(prop $UNIT MainPID); [ "$p" != 0 ] && [ "$p" != "$1" ]; }

run_package_checks() {
    local deb=$1 logs=$2 out cur pid0 restarts w0 n

    # ---- installation -----------------------------------------------------------------------
    if c apt-get install -y --no-install-recommends "$deb" > "$logs/apt-install.log" 2>&1; then
        pass "apt installs the package offline" "$(grep -E '^(Setting up|Creating)' "$logs/apt-install.log" | tr '\n' ';' | sed 's/;$//')"
    else
        fail "apt installs the package offline" "see $logs/apt-install.log"; tail -20 "$logs/apt-install.log"
        return 1
    fi

    # Every Swift library (libswift*, libdispatch, libBlocksRuntime, libFoundation*, Core) must
    # resolve under /usr/lib/tweetoscope, for the daemon and for each plugin.
    out=$(c sh -c 'for f in /usr/sbin/tweetoscoped /usr/lib/tweetoscope/plugins/*.so; do ldd "$f"; done' 2>&1)
    if ! c sh -c 'command -v swift || ls -d /opt/swift /usr/lib/swift' > /dev/null 2>&1 \
        && ! grep -q 'not found' <<<"$out" \
        && swift_libs_private "$out" && grep -q 'libswiftCore.so => /usr/' <<<"$out"; then
        pass "runs without the Swift toolchain" "no swift in the container; ldd of the daemon and $(c sh -c 'ls /usr/lib/tweetoscope/plugins | wc -l') plugins resolves Swift to /usr/lib/tweetoscope"
    else
        fail "runs without the Swift toolchain"; grep -E 'not found|swift|^/' <<<"$out" | head
    fi

    if out=$(c tweetoscoped version 2>&1) && c tweetoscoped validate > "$logs/validate.log" 2>&1; then
        pass "tweetoscoped version and validate --config $CONF" "$(head -1 <<<"$out"); $(cat "$logs/validate.log")"
    else
        fail "tweetoscoped version and validate --config $CONF"; echo "$out"; cat "$logs/validate.log"
    fi

    # ---- monitoring files and configuration permissions -------------------------------------
    out=$(c stat -c '%a %U %G' "$CONF" /etc/tweetoscope.d 2>&1 | tr '\n' ';')
    if [ "$out" = "640 root _tweetoscope;750 root _tweetoscope;" ] \
        && c dpkg-statoverride --list "$CONF" > /dev/null; then
        pass "configuration readable by root and _tweetoscope only" "$CONF and /etc/tweetoscope.d: $out"
    else
        fail "configuration readable by root and _tweetoscope only" "$out"
    fi

    local dashboard=/usr/share/tweetoscope/grafana/tweetoscoped.json
    local rules=/usr/share/tweetoscope/prometheus/tweetoscoped-rules.yml
    if c cat "$dashboard" > "$logs/dashboard.json" 2>&1 \
        && python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); titles = {p["title"] for p in d["panels"]}; sys.exit(not {"Uptime", "Version", "Configuration reloads", "ARE per window (median, p90)"} <= titles)' "$logs/dashboard.json" \
        && cmp -s "$logs/dashboard.json" etc/grafana/tweetoscoped.json; then
        pass "the Grafana dashboard is installed" "$dashboard: $(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["panels"]))' "$logs/dashboard.json") panels"
    else
        fail "the Grafana dashboard is installed" "$dashboard"
    fi
    if c cat "$rules" > "$logs/tweetoscoped-rules.yml" 2>&1 \
        && promtool check rules "$logs/tweetoscoped-rules.yml" > "$logs/promtool.log" 2>&1 \
        && cmp -s "$logs/tweetoscoped-rules.yml" etc/prometheus/tweetoscoped-rules.yml; then
        pass "the Prometheus alerting rules are installed and load (promtool check rules)" "$(grep -o 'SUCCESS.*' "$logs/promtool.log")"
    else
        fail "the Prometheus alerting rules are installed and load (promtool check rules)"; cat "$logs/promtool.log"
    fi

    if c getent passwd _tweetoscope > /dev/null && [ "$(c systemctl is-enabled $UNIT)" = enabled ] \
        && wait_until 20 is_running; then
        pass "postinst: system user _tweetoscope, unit enabled and started" "$(c getent passwd _tweetoscope)"
    else
        fail "postinst: system user _tweetoscope, unit enabled and started"
    fi

    out=$(c systemd-analyze verify /lib/systemd/system/$UNIT.service 2>&1)
    if [ -z "$out" ]; then pass "systemd-analyze verify prints nothing"
    else fail "systemd-analyze verify prints nothing" "$out"; fi

    out=$(c systemd-analyze security $UNIT 2>&1 | exposure_of)
    if le_2 "$out"; then pass "systemd-analyze security (installed unit): exposure $out <= 2.0"
    else fail "systemd-analyze security (installed unit): exposure '$out' <= 2.0"; fi

    # ---- start, readiness, status, outputs, journal -------------------------------------------
    c systemctl stop $UNIT
    c rm -rf "$OUT"
    cur=$(cursor)
    if c systemctl start $UNIT && is_running && [ "$(prop $UNIT Type)" = notify ]; then
        local t0 t1
        t0=$(prop $UNIT ExecMainStartTimestampMonotonic); t1=$(prop $UNIT ActiveEnterTimestampMonotonic)
        pass "systemctl start: active with Type=notify (READY=1 reached)" "READY $(( (t1 - t0) / 1000 )) ms after exec"
    else
        fail "systemctl start: active with Type=notify (READY=1 reached)"
        c systemctl status $UNIT --no-pager -n 20
    fi
    w0=$(prop $UNIT WatchdogTimestampMonotonic)

    if wait_until 20 status_is_summary; then
        pass "StatusText shows the live summary" "\"$(prop $UNIT StatusText)\""
    else
        fail "StatusText shows the live summary" "\"$(prop $UNIT StatusText)\""
    fi

    if wait_until 60 c test -s "$OUT/cascade_series.jsonl" -a -s "$OUT/cascade_properties.jsonl"; then
        pass "default pipeline writes its outputs under $OUT" \
            "$(c sh -c "cd $OUT && stat -c '%n %s bytes %U' *.jsonl" | tr '\n' ';' | sed 's/;$//')"
    else
        fail "default pipeline writes its outputs under $OUT" "$(c ls -l "$OUT" 2>&1 | tr '\n' ' ')"
    fi

    if wait_until 90 collector_logged; then
        n=$(c journalctl -u $UNIT STAGE=collector -o cat --no-pager | wc -l)
        pass "journalctl -u $UNIT STAGE=collector shows collector lines" \
            "$n lines, first: $(c journalctl -u $UNIT STAGE=collector -o cat --no-pager | head -1)"
    else
        fail "journalctl -u $UNIT STAGE=collector shows collector lines"
    fi

    out=$(c journalctl -u $UNIT STAGE=collector -o export --no-pager -n 1)
    if grep -q '^SYSLOG_IDENTIFIER=tweetoscoped$' <<<"$out" && grep -q '^PRIORITY=' <<<"$out" \
        && grep -q '^CODE_FILE=' <<<"$out"; then
        pass "journal entries carry structured fields" \
            "$(grep -E '^(STAGE|PRIORITY|REASON|CASCADE|SOURCE)=' <<<"$out" | tr '\n' ' ')"
    else
        fail "journal entries carry structured fields"
    fi

    if [ "$(prop $UNIT WatchdogUSec)" = 30s ] \
        && wait_until 20 watchdog_pinged "$w0"; then
        pass "watchdog: WatchdogUSec=30s and WATCHDOG=1 pings arrive"
    else
        fail "watchdog: WatchdogUSec=30s and WATCHDOG=1 pings arrive"
    fi

    # ---- reload ------------------------------------------------------------------------------
    c sed -i 's/^progress_interval: 10$/progress_interval: 5/' "$CONF"
    c sh -c "echo '# edited by the system test' >> $CONF"
    pid0=$(prop $UNIT MainPID)
    cur=$(cursor)
    if c grep -qx 'progress_interval: 5' "$CONF" && c systemctl reload $UNIT \
        && wait_until 20 journal_has "$cur" '^configuration reloaded' \
        && [ "$(prop $UNIT MainPID)" = "$pid0" ] && is_running; then
        out=$(c journalctl -u $UNIT --after-cursor="$cur" -o export --no-pager \
            | awk 'BEGIN { RS = "" } /\nMESSAGE=configuration reloaded\n/' | grep -E '^(KEPT|REBUILT)=' | tr '\n' ' ')
        pass "valid edit + systemctl reload: \"configuration reloaded\", same process" "$out"
    else
        fail "valid edit + systemctl reload: \"configuration reloaded\", same process"
        journal_since "$cur" | tail -10
    fi
    c cp "$CONF" /root/tweetoscope.yaml.valid

    c sed -i 's/^    windows: /    windowz: /' "$CONF"
    pid0=$(prop $UNIT MainPID)
    restarts=$(prop $UNIT NRestarts)
    cur=$(cursor)
    if ! c systemctl reload $UNIT 2> "$logs/reload-invalid.log" \
        && wait_until 10 journal_has "$cur" "$CONF_ERROR_RE" \
        && is_running && [ "$(prop $UNIT MainPID)" = "$pid0" ]; then
        pass "invalid edit: systemctl reload fails (ExecReload validate), service still active, errors in the journal" \
            "$(journal_since "$cur" | grep -E -m1 -- "$CONF_ERROR_RE")"
    else
        fail "invalid edit: systemctl reload fails (ExecReload validate), service still active, errors in the journal"
        journal_since "$cur" | tail -10
    fi

    wait_until 10 status_has_tweets
    cur=$(cursor)
    n=$(status_tweets)
    c systemctl kill -s HUP --kill-who=main $UNIT
    if wait_until 10 journal_has "$cur" "^reload rejected: $CONF_ERROR_RE" \
        && journal_has "$cur" 'previous configuration keeps running' \
        && sleep 5 && wait_until 10 status_has_tweets && is_running && [ "$(prop $UNIT MainPID)" = "$pid0" ] \
        && [ "$(prop $UNIT NRestarts)" = "$restarts" ] && [ "$(status_tweets)" -gt "${n:-0}" ]; then
        pass "invalid edit + SIGHUP: the daemon logs the errors and the old pipeline keeps running" \
            "$(journal_since "$cur" | grep -m1 '^reload rejected'); tweets $n -> $(status_tweets)"
    else
        fail "invalid edit + SIGHUP: the daemon logs the errors and the old pipeline keeps running"
        journal_since "$cur" | tail -10; prop $UNIT StatusText
    fi

    # ---- exit 78 at start is not restarted ------------------------------------------------------
    cur=$(cursor)
    c systemctl restart $UNIT 2>/dev/null
    sleep 5   # > RestartSec
    if [ "$(prop $UNIT ActiveState)" = failed ] && [ "$(prop $UNIT ExecMainStatus)" = 78 ] \
        && [ "$(journal_since "$cur" | grep -c 'Scheduled restart job')" = 0 ]; then
        pass "invalid configuration at start: exit 78, not restarted (RestartPreventExitStatus=78)"
    else
        fail "invalid configuration at start: exit 78, not restarted (RestartPreventExitStatus=78)" \
            "$(prop $UNIT ActiveState) status $(prop $UNIT ExecMainStatus)"
        journal_since "$cur" | tail -10
    fi
    c cp /root/tweetoscope.yaml.valid "$CONF"
    c systemctl reset-failed $UNIT
    c systemctl start $UNIT || fail "start again with the valid configuration"

    # ---- crash and stop ------------------------------------------------------------------------
    pid0=$(prop $UNIT MainPID)
    restarts=$(prop $UNIT NRestarts)
    c bash -c "kill -9 $pid0"
    if wait_until 30 restarted_from "$pid0" \
        && wait_until 20 is_running && [ "$(prop $UNIT NRestarts)" -gt "$restarts" ]; then
        pass "kill -9 of the main process: systemd restarts it" \
            "PID $pid0 -> $(prop $UNIT MainPID), NRestarts $(prop $UNIT NRestarts)"
    else
        fail "kill -9 of the main process: systemd restarts it" "$(prop $UNIT ActiveState)/$(prop $UNIT SubState)"
    fi

    sleep 2
    cur=$(cursor)
    local start=$SECONDS
    if c systemctl stop $UNIT && [ "$(prop $UNIT Result)" = success ] \
        && [ "$(prop $UNIT ActiveState)" = inactive ] && [ "$(prop $UNIT ExecMainStatus)" = 0 ]; then
        pass "systemctl stop: Result=success, exit status 0" \
            "$((SECONDS - start)) s; $(journal_since "$cur" | grep -m1 'summary' || true)"
    else
        fail "systemctl stop: Result=success, exit status 0" \
            "Result=$(prop $UNIT Result) status=$(prop $UNIT ExecMainStatus)"
        journal_since "$cur" | tail -10
    fi

    # ---- remove and purge ------------------------------------------------------------------------
    if c apt-get remove -y tweetoscoped > "$logs/apt-remove.log" 2>&1 \
        && c grep -q 'edited by the system test' "$CONF" && ! c test -e /usr/sbin/tweetoscoped \
        && [ "$(c dpkg-query -W -f='${db:Status-Abbrev}' tweetoscoped)" = "rc " ]; then
        pass "apt remove keeps the edited conffile $CONF"
    else
        fail "apt remove keeps the edited conffile $CONF"; tail -5 "$logs/apt-remove.log"
    fi

    if c apt-get purge -y tweetoscoped > "$logs/apt-purge.log" 2>&1 \
        && ! c test -e "$CONF" && ! c test -e /var/lib/tweetoscope; then
        pass "apt purge removes $CONF and /var/lib/tweetoscope"
    else
        fail "apt purge removes $CONF and /var/lib/tweetoscope"; tail -5 "$logs/apt-purge.log"
    fi
}

# Shared helpers for shell tests: source it, call ok/fail/check, end with finish.
# Tools are found on PATH (tests/run puts $RL_BIN first).
set -u
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rlflow-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
_failed=0
ok()   { echo "ok $1"; }
fail() { echo "not ok $1${2:+: $2}"; _failed=1; }
skip() { echo "ok $1 # SKIP $2"; }
# check NAME CMD...: passes when CMD exits 0
check() { local n=$1; shift; if "$@" >"$TMP/check.out" 2>&1; then ok "$n"; else fail "$n" "$(head -c 300 "$TMP/check.out" | tr '\n' ' ')"; fi; }
# check_fails NAME STATUS PATTERN CMD...: CMD must exit with STATUS and print PATTERN on stderr
check_fails() {
    local n=$1 want=$2 pat=$3; shift 3
    "$@" >"$TMP/cf.out" 2>"$TMP/cf.err"; local rc=$?
    if [ "$rc" != "$want" ]; then fail "$n" "exit $rc, want $want; stderr: $(head -c 300 "$TMP/cf.err")"
    elif ! grep -qE -- "$pat" "$TMP/cf.err"; then fail "$n" "stderr lacks /$pat/: $(head -c 300 "$TMP/cf.err")"
    else ok "$n"; fi
}
finish() { exit $_failed; }

# Helpers sourced by the test scripts of tools/ and bench/ (tools_gaps.sh, tools_sass.sh,
# bench_report.sh): py (Debian's python3 where there is one), a scratch folder $tmp (kept when
# KEEP_TMP is set), bad and has to count failed checks, and finish to report them and set the
# exit status.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
tmp=$(mktemp -d)
[ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
has() { grep -qF -- "$2" "$1" || bad "$1 lacks: $2"; }
# finish NAME: the summary line; status 0 when every check passed
finish() {
  [ $fails = 0 ] && echo "$1: all checks passed" || echo "$1: $fails failed"
  [ $fails = 0 ]
}

# Helpers sourced by the CLI test scripts (data_cli.sh, plan_cli.sh, needles_cli.sh). The script
# sets TEST_NAME (the prefix of its messages) and tmp (its scratch directory) first.

fail() {
    echo "$TEST_NAME: FAIL: $*" >&2
    exit 1
}

# expect_rc WANT CMD...: runs CMD with stdout in $tmp/out and stderr in $tmp/err.
expect_rc() {
    local want=$1
    shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "--- stdout" >&2
        cat "$tmp/out" >&2
        echo "--- stderr" >&2
        cat "$tmp/err" >&2
        fail "'$*' exited $rc, expected $want"
    fi
}

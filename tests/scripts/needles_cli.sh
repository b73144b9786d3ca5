#!/usr/bin/env bash
# End-to-end test of `difftrain data needles`: help and usage errors (exit 2 naming the option),
# byte-identical reruns, a different seed differs, and an independent Python checker
# (needles_check.py) that re-reads the shard and the answers for N = 1, R = N, depth 0, 1, 0.5,
# random, a fortune-format haystack file and 32-bit tokens. `data info` must read the shard.
#
# usage: needles_cli.sh DIFFTRAIN_BIN
set -u
BIN=${1:?usage: needles_cli.sh DIFFTRAIN_BIN}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "needles_cli: no $PY, skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-needles-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

TEST_NAME=needles_cli
. "$(dirname "$0")/cli_lib.sh"

# expect_usage OPTION ARGS...: exit 2, and the message names OPTION.
expect_usage() {
    local opt=$1
    shift
    expect_rc 2 "$BIN" data needles "$@"
    grep -q -- "$opt" "$tmp/err" || fail "the error for '$*' does not name $opt: $(cat "$tmp/err")"
}

# ---- help and usage ----
expect_rc 0 "$BIN" data --help
grep -q "needles" "$tmp/out" || fail "data --help does not list needles"
expect_rc 0 "$BIN" data needles --help
for o in --out --name --samples --needles --queries --context --depth --seed --haystack --bits; do
    grep -q -- "$o" "$tmp/out" || fail "data needles --help does not describe $o"
done
o="$tmp/x"
expect_usage --out --samples 2
expect_usage --context --out "$o" --needles 4 --queries 2 --context 100
grep -q "at least 252 tokens" "$tmp/err" || fail "the context error does not give the minimum"
expect_usage --queries --out "$o" --needles 2 --queries 3
expect_usage --needles --out "$o" --needles 0
expect_usage --needles --out "$o" --needles 65 --queries 1
expect_usage --depth --out "$o" --depth 1.5
expect_usage --depth --out "$o" --depth deep
expect_usage --seed --out "$o" --seed -3
expect_usage --bits --out "$o" --bits 8
expect_usage --samples --out "$o" --samples 0
expect_usage --context --out "$o" --context
expect_usage --frobnicate --out "$o" --frobnicate 1
expect_usage missing.txt --out "$o" --haystack "$tmp/missing.txt"
[ -e "$o" ] && fail "a failed run created its output directory"

# ---- determinism ----
args=(--samples 8 --needles 4 --queries 2 --context 1024 --seed 5)
expect_rc 0 "$BIN" data needles --out "$tmp/a" "${args[@]}"
grep -q "needles_000000.bin: 8193 tokens" "$tmp/out" || fail "unexpected summary: $(cat "$tmp/out")"
expect_rc 0 "$BIN" data needles --out "$tmp/b" "${args[@]}"
cmp -s "$tmp/a/needles_000000.bin" "$tmp/b/needles_000000.bin" || fail "reruns differ (shard)"
cmp -s "$tmp/a/needles_answers.jsonl" "$tmp/b/needles_answers.jsonl" || fail "reruns differ (answers)"
expect_rc 0 "$BIN" data needles --out "$tmp/c" "${args[@]}" --seed 6
cmp -s "$tmp/a/needles_000000.bin" "$tmp/c/needles_000000.bin" && fail "seeds 5 and 6 give the same shard"
cmp -s "$tmp/a/needles_answers.jsonl" "$tmp/c/needles_answers.jsonl" && fail "seeds 5 and 6 give the same answers"
ls "$tmp"/a/*.tmp >/dev/null 2>&1 && fail "temporary files left behind"
[ "$(wc -l <"$tmp/a/needles_answers.jsonl")" -eq 8 ] || fail "expected 8 answer lines"
"$PY" "$HERE/needles_check.py" "$tmp/a/needles_000000.bin" "$tmp/a/needles_answers.jsonl" \
    1024 4 2 random || fail "checker (4 needles, 2 queries, random depth)"

# ---- data info reads the shard: 8 documents + the final EOT ----
expect_rc 0 "$BIN" data info "$tmp/a/needles_000000.bin"
grep -q "8193 tokens" "$tmp/out" || fail "data info: $(cat "$tmp/out")"
grep -q "9 end-of-text" "$tmp/out" || fail "data info does not count 9 end-of-text tokens"

# ---- the checker on edge cases: N = 1, R = N, depth 0 / 1 / 0.5, bits 32 ----
check() { # check NAME CONTEXT N R DEPTH [EXTRA ARGS...]
    local name=$1 ctx=$2 n=$3 r=$4 d=$5
    shift 5
    expect_rc 0 "$BIN" data needles --out "$tmp/e" --name "$name" --samples 12 --context "$ctx" \
        --needles "$n" --queries "$r" --depth "$d" --seed 11 "$@"
    "$PY" "$HERE/needles_check.py" "$tmp/e/${name}_000000.bin" "$tmp/e/${name}_answers.jsonl" \
        "$ctx" "$n" "$r" "$d" || fail "checker ($name)"
}
check n1 4096 1 1 random
check n1d0 512 1 1 0
check n1d1 512 1 1 1
check rn 4096 6 6 0.5 --bits 32
check n6d0 4096 6 2 0
check n6d1 2048 6 6 1
check tight 252 4 2 random
[ "$(od -An -td4 -N4 "$tmp/e/rn_000000.bin" | tr -d ' ')" = 20240801 ] ||
    fail "--bits 32 did not write a uint32 shard (magic 20240801)"

# ---- a fortune-format haystack file ----
for i in $(seq 0 39); do
    printf 'Fortune number %d says: patience is a virtue.\nSecond line of %d!\n%%\n' "$i" "$i"
done >"$tmp/fortunes.txt"
expect_rc 0 "$BIN" data needles --out "$tmp/f" --samples 10 --needles 3 --queries 2 \
    --context 2048 --haystack "$tmp/fortunes.txt" --seed 3
"$PY" "$HERE/needles_check.py" "$tmp/f/needles_000000.bin" "$tmp/f/needles_answers.jsonl" \
    2048 3 2 random file || fail "checker (haystack file)"
"$PY" - "$tmp/f/needles_000000.bin" <<'EOF' || fail "the haystack text is not the file's"
import struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<3i", raw[:12])[2]
text = bytes(t for t in struct.unpack("<%dH" % n, raw[1024:]) if t < 256)
assert b"patience is a virtue" in text and b"\n%\n" not in text, "haystack text"
EOF
echo "needles_cli: ok"

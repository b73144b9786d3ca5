#!/usr/bin/env bash
# End-to-end test of `difftrain data prepare` and `difftrain data info`: prepares two small
# generated fortune-format files, checks what prepare and info print against each other and against
# the files on disk, decodes the shards independently (Python, when present) back to the input
# documents, and checks the exit codes: 0 on success, 2 for usage errors, a missing file and bad
# shards.
#
# usage: data_cli.sh DIFFTRAIN_BIN
set -u
BIN=${1:?usage: data_cli.sh DIFFTRAIN_BIN}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-data-cli-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

TEST_NAME=data_cli
. "$(dirname "$0")/cli_lib.sh"

# ---- inputs: 60 + 30 documents separated by lines holding just "%" ----
for i in $(seq 0 59); do
    printf 'fortune %d\nA line of text number %d, with some words in it.\n' "$i" "$i"
    [ $((i % 7)) -eq 0 ] && printf 'An extra line for %d: %s\n' "$i" "$(printf '%*s' "$i" '' | tr ' ' 'x')"
    printf '%%\n'
done >"$tmp/a.txt"
for i in $(seq 0 29); do
    printf 'other %d\nTabs\tand "quotes" and caf\xc3\xa9.\n%%\n' "$i"
done >"$tmp/b.txt"

# ---- help and usage ----
expect_rc 0 "$BIN" data --help
grep -q "usage" "$tmp/out" || fail "data --help prints no usage"
expect_rc 0 "$BIN" data prepare --help
grep -q -- "--split-on" "$tmp/out" || fail "data prepare --help does not describe --split-on"
expect_rc 0 "$BIN" data info --help
grep -q "entropy" "$tmp/out" || fail "data info --help does not mention the entropy"
expect_rc 2 "$BIN" data
expect_rc 2 "$BIN" data frobnicate
expect_rc 2 "$BIN" data prepare "$tmp/a.txt"                  # no --out
expect_rc 2 "$BIN" data prepare --out "$tmp/x"                # no input
expect_rc 2 "$BIN" data prepare --out "$tmp/x" --bits 8 "$tmp/a.txt"
expect_rc 2 "$BIN" data prepare --out "$tmp/x" --val-fraction 1.5 --split-on % "$tmp/a.txt"
expect_rc 2 "$BIN" data prepare --out "$tmp/x" --shard-tokens zero "$tmp/a.txt"
expect_rc 2 "$BIN" data prepare --out "$tmp/x" --no-such-option "$tmp/a.txt"
expect_rc 2 "$BIN" data info

# ---- a missing input file: exit 2, named, nothing written ----
expect_rc 2 "$BIN" data prepare --out "$tmp/x" --split-on % "$tmp/a.txt" "$tmp/missing.txt"
grep -q "missing.txt" "$tmp/err" || fail "the error does not name the missing file"
[ -e "$tmp/x" ] && fail "a failed prepare created its output directory"

# ---- prepare ----
expect_rc 0 "$BIN" data prepare --out "$tmp/shards" --name fort --split-on % --shard-tokens 2K \
    --val-fraction 0.2 "$tmp/a.txt" "$tmp/b.txt"
cp "$tmp/out" "$tmp/prepare.txt"
cat "$tmp/prepare.txt"
grep -q "^90 documents" "$tmp/prepare.txt" || fail "the summary does not report 90 documents"
# One line per shard, "PATH: N tokens", for exactly the files on disk.
listed=$(grep -c '\.bin: [0-9]* tokens$' "$tmp/prepare.txt")
on_disk=$(ls "$tmp/shards"/fort_*.bin | wc -l)
[ "$listed" -eq "$on_disk" ] || fail "prepare listed $listed shards, $on_disk are on disk"
[ -f "$tmp/shards/fort_train_000000.bin" ] || fail "no fort_train_000000.bin"
[ -f "$tmp/shards/fort_train_000001.bin" ] || fail "--shard-tokens 2K did not split the training data"
[ -f "$tmp/shards/fort_val_000000.bin" ] || fail "no fort_val_000000.bin"
ls "$tmp/shards"/*.tmp >/dev/null 2>&1 && fail "temporary files left behind"
train_tokens=$(sed -n 's/.* train (\([0-9]*\) tokens.*/\1/p' "$tmp/prepare.txt")
val_tokens=$(sed -n 's/.* val (\([0-9]*\) tokens.*/\1/p' "$tmp/prepare.txt")
[ -n "$train_tokens" ] && [ -n "$val_tokens" ] || fail "the summary has no token counts"
# Every train shard but the last holds exactly 2000 tokens.
n_train=$(ls "$tmp/shards"/fort_train_*.bin | wc -l)
full=$(grep -c 'fort_train_[0-9]*\.bin: 2000 tokens$' "$tmp/prepare.txt")
[ "$full" -eq $((n_train - 1)) ] || fail "$full full train shards of $n_train, expected $((n_train - 1))"

# ---- info ----
expect_rc 0 "$BIN" data info "$tmp/shards"/fort_*.bin
cp "$tmp/out" "$tmp/info.txt"
cat "$tmp/info.txt"
[ "$(wc -l <"$tmp/info.txt")" -eq "$on_disk" ] || fail "info printed no line per shard"
grep -q "uint16 (magic 20240520, version 1)" "$tmp/info.txt" || fail "info does not report the format"
grep -q "nats/token" "$tmp/info.txt" && grep -q "bits/token" "$tmp/info.txt" ||
    fail "info does not report the unigram entropy"
# Token and end-of-text totals over all shards agree with prepare: one EOT per document.
sum_tokens=$(sed -n 's/.*), \([0-9]*\) tokens,.*/\1/p' "$tmp/info.txt" | awk '{ s += $1 } END { print s + 0 }')
[ "$sum_tokens" -eq $((train_tokens + val_tokens)) ] ||
    fail "info counts $sum_tokens tokens, prepare wrote $((train_tokens + val_tokens))"
sum_eot=$(sed -n 's/.*, \([0-9]*\) end-of-text.*/\1/p' "$tmp/info.txt" | awk '{ s += $1 } END { print s + 0 }')
[ "$sum_eot" -eq 90 ] || fail "info counts $sum_eot end-of-text tokens, expected 90"
grep -q "ids 9\.\.256" "$tmp/info.txt" || fail "info's id range should reach 9 (tab) .. 256 (EOT)"

# ---- independent decode: every document exactly once over train and val ----
if command -v python3 >/dev/null; then
    python3 - "$tmp" <<'EOF' || fail "the shards do not decode back to the input documents"
import glob, struct, sys
tmp = sys.argv[1]
docs = []
for name in ("a.txt", "b.txt"):
    text = open(f"{tmp}/{name}", "rb").read()
    cur = b""
    for line in text.split(b"\n")[:-1]:
        if line == b"%":
            if cur:
                docs.append(cur)
            cur = b""
        else:
            cur += line + b"\n"
    assert not cur
got = []
for path in sorted(glob.glob(f"{tmp}/shards/fort_*.bin")):
    raw = open(path, "rb").read()
    magic, version, n = struct.unpack("<3i", raw[:12])
    assert (magic, version) == (20240520, 1), path
    assert len(raw) == 1024 + 2 * n, path
    got += struct.unpack(f"<{n}H", raw[1024:])
out, cur = [], bytearray()
for t in got:
    if t == 256:
        out.append(bytes(cur))
        cur = bytearray()
    else:
        assert t < 256
        cur.append(t)
assert not cur
assert sorted(out) == sorted(docs), (len(out), len(docs))
assert len(set(docs)) == 90
EOF
fi

# ---- 32-bit shards ----
expect_rc 0 "$BIN" data prepare --out "$tmp/out32" --bits 32 --split-on % "$tmp/a.txt"
expect_rc 0 "$BIN" data info "$tmp/out32/data_train_000000.bin"
grep -q "uint32 (magic 20240801, version 7)" "$tmp/out" || fail "--bits 32 did not write uint32 shards"

# ---- bad shards: exit 2, named; the good ones are still described ----
expect_rc 2 "$BIN" data info "$tmp/shards/fort_val_000000.bin" "$tmp/missing.bin"
grep -q "missing.bin" "$tmp/err" || fail "info does not name the missing shard"
grep -q "fort_val_000000.bin: uint16" "$tmp/out" || fail "info skipped the good shard"
expect_rc 2 "$BIN" data info "$tmp/a.txt"
grep -q "a.txt" "$tmp/err" || fail "info does not name the bad shard"
head -c 2000 "$tmp/shards/fort_train_000000.bin" >"$tmp/truncated.bin"
expect_rc 2 "$BIN" data info "$tmp/truncated.bin"
grep -q "truncated" "$tmp/err" || fail "info does not say the shard is truncated"

echo "data_cli: OK"

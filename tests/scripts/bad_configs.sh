#!/usr/bin/env bash
# Usage: bad_configs.sh DIFFTRAIN_BIN DIR
#
# Runs `DIFFTRAIN_BIN train FILE` for every DIR/*.yaml, each a malformed config whose first line
# is "# expect: LINE KEY.PATH", and checks that the program exits with status 2 (bad config)
# and that its stderr names "FILE:LINE:" (or "FILE: " when LINE is 0, a defaulted key) and the
# key path. Exits 77 (skipped) when the program has not been built.
set -u

bin=${1:?usage: bad_configs.sh DIFFTRAIN_BIN DIR}
dir=${2:?usage: bad_configs.sh DIFFTRAIN_BIN DIR}

if [ ! -x "$bin" ]; then
    echo "skipped: $bin is not built"
    exit 77
fi

# One rank, few threads: these runs must stop at config loading, long before any training.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

n=0
failed=0
for file in "$dir"/*.yaml; do
    [ -e "$file" ] || continue
    n=$((n + 1))
    first=$(head -n 1 "$file")
    if [[ ! $first =~ ^#\ expect:\ ([0-9]+)\ ([^[:space:]]+)[[:space:]]*$ ]]; then
        echo "FAIL $file: first line must be '# expect: LINE KEY.PATH', got: $first"
        failed=$((failed + 1))
        continue
    fi
    line=${BASH_REMATCH[1]}
    key=${BASH_REMATCH[2]}
    if [ "$line" -eq 0 ]; then
        where="$file: "
    else
        where="$file:$line:"
    fi

    # stderr only; stdout (a banner, the resolved config) is not part of the contract.
    err=$(timeout 60 "$bin" train "$file" 2>&1 >/dev/null)
    status=$?

    problems=""
    [ "$status" -eq 2 ] || problems+=" exit status $status (expected 2);"
    grep -qF -- "$where" <<<"$err" || problems+=" stderr lacks '$where';"
    grep -F -- "$where" <<<"$err" | grep -qF -- " $key: " ||
        problems+=" no stderr line names both '$where' and '$key';"
    if [ -n "$problems" ]; then
        echo "FAIL $file:$problems"
        echo "  stderr: $err"
        failed=$((failed + 1))
    else
        echo "ok   $file"
    fi
done

if [ "$n" -lt 12 ]; then
    echo "FAIL: expected at least 12 configs in $dir, found $n"
    exit 1
fi
echo "$((n - failed))/$n malformed configs rejected as expected"
[ "$failed" -eq 0 ]

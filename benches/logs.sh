#!/usr/bin/env bash
# `samocode logs` on large attempt logs, with the release build: prints the wall time and the
# peak memory of one run on each log. A measurement that prints figures, not a test: compare
# them with the ones recorded in benches/README.md ("samocode logs").
#
#   benches/logs.sh [SIZE_MB]     (default 50)
#
# Two logs of SIZE_MB megabytes each: a realistic stream of claude events (text, tool calls,
# tool results of a few kilobytes, a result line), and one single line of that size (what an
# agent flooding its output without a newline leaves behind).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb="${1:-50}"

cargo build --release --locked --quiet
bin="$PWD/target/release/samocode"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/repo" "$work/worktrees" "$work/sessions"
printf 'MAIN_REPO=repo\nWORKTREES=worktrees\nSESSIONS=sessions\n' >"$work/.samocode"

make_session() { # NAME -> the attempt log's path
    local dir="$work/sessions/26-01-01-$1/_logs"
    mkdir -p "$dir"
    echo "$dir/01-01-000000-001-implementation-a1.jsonl"
}

# Events as claude prints them, about 1.2 KB each on average, until SIZE_MB is reached.
events="$(make_session events)"
awk -v bytes="$((size_mb * 1024 * 1024))" 'BEGIN {
    filler = sprintf("%2000s", ""); gsub(/ /, "x", filler)
    print "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\",\"model\":\"claude-x\"}"
    for (i = 0; total < bytes; i++) {
        if (i % 3 == 0) line = "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Step " i ": reading the next file and running the tests again.\"}]}}"
        else if (i % 3 == 1) line = "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Bash\",\"input\":{\"command\":\"cargo test --lib step_" i "\"}}]}}"
        else line = "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":\"tool_result\",\"content\":\"" substr(filler, 1, 1000 + (i % 1000)) "\"}]}}"
        print line
        total += length(line) + 1
    }
    print "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"total_cost_usd\":1.25,\"num_turns\":" i "}"
}' >"$events"

# One line of SIZE_MB megabytes, no newline inside.
long="$(make_session long)"
head -c "$((size_mb * 1024 * 1024))" /dev/zero | tr '\0' 'y' >"$long"

measure() { # NAME
    local log
    log="$(ls "$work/sessions/26-01-01-$1/_logs/"*.jsonl)"
    local bytes start end lines
    bytes=$(stat -c %s "$log")
    start=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%M' -o "$work/rss" "$bin" --config "$work/.samocode" logs "$1" >"$work/out"
    else
        "$bin" --config "$work/.samocode" logs "$1" >"$work/out"
        echo "?" >"$work/rss"
    fi
    end=$(date +%s.%N)
    lines=$(wc -l <"$work/out")
    awk -v name="$1" -v mb="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        -v s="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')" \
        -v rss="$(cat "$work/rss")" -v lines="$lines" \
        'BEGIN { printf "logs %-7s %6s MB  %7s s  peak RSS %s KB  %s lines shown\n", name, mb, s, rss, lines }'
}

measure events
measure long

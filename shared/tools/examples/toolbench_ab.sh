#!/bin/sh
# Runs one or two toolbench binaries alternately and prints every run's row per tool and the
# medians, so the README's figures come from a program, not from hand aggregation.
#
#   shared/tools/examples/toolbench_ab.sh [-n RUNS] [-d DIR] [-o OUTDIR] A_BINARY [B_BINARY]
#
# A binary is built with `cargo build --release -p hands-tools --example toolbench` (for a
# before/after pair, build each commit into its own CARGO_TARGET_DIR and copy nothing: pass the
# two paths). -n: runs per binary (default 3); -d: the --dir given to toolbench (the file system
# measured; default its own temporary directory); -o: where the raw outputs are kept (default a
# new temporary directory, printed). The load average is printed before every run.
set -eu

runs=3
dir=""
out=""
while getopts n:d:o: opt; do
    case $opt in
    n) runs=$OPTARG ;;
    d) dir=$OPTARG ;;
    o) out=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 [-n RUNS] [-d DIR] [-o OUTDIR] A_BINARY [B_BINARY]" >&2
    exit 2
fi
for bin in "$@"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
[ -n "$out" ] || out=$(mktemp -d /tmp/toolbench-ab.XXXXXX)
mkdir -p "$out"
echo "raw outputs in $out"

i=1
while [ "$i" -le "$runs" ]; do
    label=A
    for bin in "$@"; do
        echo "run $i $label ($bin) at $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
        if [ -n "$dir" ]; then
            "$bin" --dir "$dir" >"$out/$label.$i" 2>"$out/$label.$i.err"
        else
            "$bin" >"$out/$label.$i" 2>"$out/$label.$i.err"
        fi
        label=B
    done
    i=$((i + 1))
done
echo "finished at $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"

# Every table row "| tool | calls | p50 | p99 | CPU p50 | ...", and grep's first- and
# second-call figures, in microseconds; per binary and tool: the runs' values in order, then
# their median.
for label in A B; do
    [ -e "$out/$label.1" ] || continue
    echo
    echo "$label: per run p50 and CPU p50 (µs), then the medians"
    for f in "$out/$label".[0-9]*; do
        case $f in *.err) continue ;; esac
        awk -v run="${f##*.}" '
            function us(v) { n = v + 0; if (v ~ /ms/) n *= 1000; else if (v ~ / s$/) n *= 1e6; return n }
            /^\| [a-z]/ && $2 != "tool" {
                split($0, c, "|")
                name = c[2]; gsub(/^ +| +$/, "", name)
                print name "\t" run "\t" us(c[4]) "\t" us(c[6])
            }
            /^grep.s first call/ {
                first = $0; sub(/^[^)]*\): /, "", first); sub(/;.*/, "", first)
                second = $0; sub(/.*: /, "", second)
                print "grep first call\t" run "\t" us(first) "\t"
                print "grep second call\t" run "\t" us(second) "\t"
            }
        ' "$f"
    done | sort -t"$(printf '\t')" -k1,1 -s | awk -F'\t' '
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function show(v) { return v >= 1000 ? sprintf("%.2f ms", v / 1000) : sprintf("%.0f µs", v) }
        function flush() {
            if (name == "") return
            line = sprintf("%-28s p50 %s", name, p50s)
            if (cpus != "") line = line sprintf("| CPU %s", cpus)
            line = line sprintf("| median p50 %s", show(median(p50s)))
            if (cpus != "") line = line sprintf(", CPU %s", show(median(cpus)))
            print line
        }
        $1 != name { flush(); name = $1; p50s = ""; cpus = "" }
        { p50s = p50s $3 " "; if ($4 != "") cpus = cpus $4 " " }
        END { flush() }
    '
done

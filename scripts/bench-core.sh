#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The core benchmark tables: builds kcont in release mode and runs the core
# table (kcont against a bare queue, a condvar hand-off, Asio post and
# libuv async), then the buf read path against a blocking pread + condvar
# hand-off (see docs/benchmarks.md).  Arguments go to the core benchmark
# (Google Benchmark flags).  The core table is also written as CSV,
# bench/results/core-<timestamp>.csv (and core-latest.csv), and charted
# (ns per operation, log scale) in bench/results/core-latest.png.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps gnuplot-nox
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont_bench kcont_bench_buf
results=bench/results
mkdir -p "$results"
csv=$results/core-$(date +%Y%m%d-%H%M%S).csv
./build/core/bench/kcont_bench --benchmark_out="$csv" --benchmark_out_format=csv "$@"
cp "$csv" "$results/core-latest.csv"
# name -> ns per operation, for the chart.
python3 - "$csv" "$results/core-latest.dat" <<'PY'
import csv, sys
scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith("name,"))
with open(sys.argv[2], "w") as out:
    for r in csv.DictReader(lines[start:]):
        if r.get("error_occurred") == "true" or not r.get("real_time"):
            continue
        name = r["name"].replace("BM_", "").split("/")[0]
        # Rows time batches of operations; items_per_second is per second of
        # the benchmark thread's CPU time, so items per batch = rate x CPU
        # time, and one operation's wall time = real time / items.
        unit = scale.get(r["time_unit"], 1.0)
        real_ns, cpu_ns = float(r["real_time"]) * unit, float(r["cpu_time"]) * unit
        ns = real_ns
        if r.get("items_per_second") and cpu_ns > 0:
            items = float(r["items_per_second"]) * cpu_ns / 1e9
            if items > 0:
                ns = real_ns / items
        out.write('"%s" %.3f\n' % (name, ns))
PY
gnuplot <<GP || echo "bench-core: gnuplot failed; no chart" >&2
set terminal pngcairo size 1200,640 font 'DejaVu Sans,10'
set output "$results/core-latest.png"
set title "kcont core: time per operation (ns, log scale; lower is better)"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.8
set logscale y
set grid ytics
set xtics rotate by -35
set ylabel "ns/op"
plot "$results/core-latest.dat" using 2:xtic(1) notitle
GP
rm -f "$results/core-latest.dat"
echo "core table: $csv (and core-latest.csv), chart: $results/core-latest.png"
echo
./build/io/kcont_bench_buf

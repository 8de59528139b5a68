# `make bench`: task-api against pgbench on the same database and machine, in one run.

.PHONY: bench bench-curve

## bench         load test against pgbench (wrk; ~8 minutes); prints the README's Performance table;
##               BENCH_CURVE=1 also redraws the load–latency curve
bench: build
	scripts/bench.py

## bench-curve   get_by_id, create and patch at 16 to 4,096 connections (~2 minutes): redraws
##               docs/load-latency.svg and prints its numbers
bench-curve: build
	scripts/bench.py curve

# `make bench`: task-api against pgbench on the same database and machine, in one run.

.PHONY: bench bench-curve bench-overload bench-memory

## bench         load test against pgbench (wrk; ~13 minutes); prints its table and writes it to
##               docs/results/bench.md; BENCH_CURVE=1 also redraws the load–latency curve
bench: build
	PYTHONPATH=scripts python3 -m bench

## bench-curve   get_by_id, create and patch at 16 to 4,096 connections (~2 minutes): prints its
##               numbers, writes docs/results/load-latency.svg and load-latency.md
bench-curve: build
	PYTHONPATH=scripts python3 -m bench curve

## bench-overload get_by_id at 4,096 connections alone, BENCH_ROUNDS (5) times, each of
##               BENCH_VARIANTS in turn (~20 s a run): writes docs/results/overload.md
bench-overload: build
	PYTHONPATH=scripts python3 -m bench overload

## bench-memory  what 4,096 connections hold, kept alive and with a request in flight, BENCH_ROUNDS
##               (5) times, each of BENCH_VARIANTS in turn (~10 s a run): writes docs/results/memory.md
bench-memory: build
	PYTHONPATH=scripts python3 -m bench memory

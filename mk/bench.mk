# `make bench`: task-api against pgbench on the same database and machine, in one run.

.PHONY: bench

## bench         load test against pgbench (wrk; ~3 minutes); prints the README's Performance table
bench: build
	scripts/bench.py

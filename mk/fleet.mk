# `make test-fleet`: task-api as many replicas behind HAProxy, on a PostgreSQL primary with a
# synchronous streaming standby (scripts/fleet/): rolling restart, failover, many at once.

.PHONY: test-fleet

## test-fleet    the fleet suite (~1 minute): HAProxy, 3 replicas, a primary and a standby on loopback;
##               rolling restart, failover, 8 replicas at once; prints the table and writes it to
##               docs/results/fleet.md
test-fleet: build
	PYTHONPATH=scripts python3 -m fleet

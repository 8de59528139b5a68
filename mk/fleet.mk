# `make test-fleet`: task-api as many replicas behind HAProxy, on a PostgreSQL primary with a
# synchronous streaming standby (scripts/fleet/): rolling restart, failover, many at once; then
# on a primary with two standbys that serve reads: the consistency token, standbys paused or killed.

.PHONY: test-fleet

## test-fleet    the fleet suite (~2 minutes after the build): HAProxy, 3 replicas, a primary and
##               standbys on loopback; rolling restart, failover, 8 replicas at once; reads from
##               standbys (token, paused, killed, forged); prints the table and writes it to
##               docs/results/fleet.md
test-fleet: build
	PYTHONPATH=scripts python3 -m fleet

# `make test-faults`: the fault suite (scripts/faults/): task-api against a slow, stalled,
# failing or hostile world, each scenario with its own servers and PostgreSQL on loopback.

.PHONY: test-faults

## test-faults   the fault suite (~4 minutes): each fault's figure against its target; prints the table and
##               writes it to docs/results/faults.md
test-faults: build
	PYTHONPATH=scripts python3 -m faults

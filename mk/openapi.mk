# The API contract: src/http/openapi.json, served at GET /openapi.json, checked against
# the running server by schemathesis (scripts/schemathesis.sh).

.PHONY: test-openapi

## test-openapi  schemathesis (pip installs it when missing) against the debug server and a
##               throwaway PostgreSQL, every check on: no 5xx, nothing off the OpenAPI contract
test-openapi:
	scripts/schemathesis.sh

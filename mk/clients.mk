# `make test-clients`: src/http/openapi.json as client developers meet it. Redocly lints it
# (recommended rules), openapi-python-client, openapi-typescript and openapi-generator (python,
# typescript-fetch) generate clients from it, mypy --strict and tsc (strict) type-check them,
# and the flows of scripts/clients/,
# written against the generated code only, run against the debug server and a throwaway
# PostgreSQL; then headless Chromium (Debian's) opens /docs and tries it (browser.mjs, with
# playwright-core), saving docs/images/docs.png. The tools are pinned: Python's in
# scripts/clients/requirements.txt (a venv under target/), npm's in scripts/clients/package-lock.json
# (`npm ci`, scripts/clients/node_modules).

CLIENTS := scripts/clients
CLIENTS_OUT := target/clients
CLIENTS_VENV := $(CLIENTS_OUT)/venv
CLIENTS_NPM := $(CLIENTS)/node_modules/.bin
# The browser for /docs: Debian's chromium (installed when missing), or any Chromium-based one.
export CHROMIUM ?= $(shell command -v chromium 2>/dev/null)
# Redocly CLI sends usage data and looks for updates unless told not to.
REDOCLY = REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(CLIENTS_NPM)/redocly

.PHONY: test-clients clients-tools

## test-clients  Redocly lint (recommended rules), then clients generated from the OpenAPI document
##               (openapi-python-client; openapi-typescript + openapi-fetch; openapi-generator python and
##               typescript-fetch), type-checked strictly and
##               run through every flow against the debug server; /docs in headless Chromium
##               (~1 min once the tools are installed)
test-clients: clients-tools
	$(REDOCLY) lint --extends recommended --format summary src/http/openapi.json 2>&1 | tee $(CLIENTS_OUT)/lint.txt
	# Redocly fails on errors only: a warning fails here too.
	! grep -q '^warning' $(CLIENTS_OUT)/lint.txt
	rm -rf $(CLIENTS_OUT)/python $(CLIENTS_OUT)/typescript
	PATH="$(abspath $(CLIENTS_VENV))/bin:$$PATH" openapi-python-client generate --path src/http/openapi.json \
	  --meta none --fail-on-warning --output-path $(CLIENTS_OUT)/python/task_api_client
	$(CLIENTS_NPM)/openapi-typescript src/http/openapi.json --output $(CLIENTS_OUT)/typescript/schema.d.ts
	cd $(CLIENTS) && MYPYPATH=../../$(CLIENTS_OUT)/python ../../$(CLIENTS_VENV)/bin/mypy --config-file mypy.ini \
	  --cache-dir ../../$(CLIENTS_OUT)/mypy-cache ../../$(CLIENTS_OUT)/python/task_api_client flows.py
	$(CLIENTS_NPM)/tsc --project $(CLIENTS)
	# openapi-generator (from PyPI, with its own JDK): a warning fails, but for the two of its
	# own that any 3.1 document with properties gets (docs/clients.md).
	rm -rf $(CLIENTS_OUT)/generator
	for g in python typescript-fetch; do \
	  $(CLIENTS_VENV)/bin/openapi-generator-cli generate -g $$g -i src/http/openapi.json \
	    -o $(CLIENTS_OUT)/generator/$${g%-fetch} --package-name task_api_oag > $(CLIENTS_OUT)/generator-$$g.txt 2>&1 \
	    || { cat $(CLIENTS_OUT)/generator-$$g.txt; exit 1; }; \
	  if grep -E 'WARN|ERROR' $(CLIENTS_OUT)/generator-$$g.txt | grep -vxF -f $(CLIENTS)/generator-warnings.txt; then exit 1; fi; \
	done
	cd $(CLIENTS) && MYPYPATH=../../$(CLIENTS_OUT)/generator/python ../../$(CLIENTS_VENV)/bin/mypy --config-file mypy.ini \
	  --cache-dir ../../$(CLIENTS_OUT)/mypy-cache ../../$(CLIENTS_OUT)/generator/python/task_api_oag generator_flows.py
	$(CLIENTS_NPM)/tsc --project $(CLIENTS)/tsconfig.generator.json
	# flows.mjs, in target/, finds openapi-fetch through this link.
	ln -sfn ../../../$(CLIENTS)/node_modules $(CLIENTS_OUT)/typescript/node_modules
	cargo build --locked --bin task-api
	PYTHONPATH=scripts python3 -m clients

# Installs again only when a lock file changed: each install leaves a copy of its lock file.
clients-tools:
	mkdir -p $(CLIENTS_OUT) docs/images
	[ -n "$(CHROMIUM)" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	cmp -s $(CLIENTS)/requirements.txt $(CLIENTS_VENV)/requirements.txt \
	  || { rm -rf $(CLIENTS_VENV) && python3 -m venv $(CLIENTS_VENV) \
	       && $(CLIENTS_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(CLIENTS)/requirements.txt \
	       && cp $(CLIENTS)/requirements.txt $(CLIENTS_VENV)/requirements.txt; }
	cmp -s $(CLIENTS)/package-lock.json $(CLIENTS)/node_modules/.installed-package-lock.json \
	  || { cd $(CLIENTS) && npm ci --no-audit --no-fund \
	       && cp package-lock.json node_modules/.installed-package-lock.json; }

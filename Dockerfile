# The agent-builder listener: `docker build -t agent-builder .`
#
# Two stages: the first builds a virtualenv with a normal (non-editable) `pip install .`, which ships
# sql/ and migrations/ inside the package as listener.sql / listener.migrations (see pyproject.toml);
# the second copies only that virtualenv onto a fresh slim Python, so no pip cache, build tree or
# sources end up in the image. Every dependency comes as a wheel: no compiler is needed.
#
# Reaching the Docker engine (the listener builds and runs sandbox containers with the docker SDK,
# which honours DOCKER_HOST and otherwise uses /var/run/docker.sock). Pick one, knowingly:
#   * Mount the host's /var/run/docker.sock (what docker-compose.yml does). Simple, but whoever
#     controls the listener controls the host: the Docker API can start a privileged container that
#     mounts / . The non-root USER below does not change that; it only keeps a compromised process
#     from writing to the image's own files. Only acceptable on a machine dedicated to this job.
#   * A rootless Docker engine (dockerd-rootless), its socket mounted instead: the API is still
#     all-powerful, but only over an unprivileged user's containers and files.
#   * A socket proxy (e.g. tecnativa/docker-socket-proxy) that allows only what the builder uses:
#     /_ping, images (build, inspect, list, remove, tag), containers (create, start, wait, logs,
#     archive/export, kill, remove, inspect, rename), networks (inspect, create). Narrower, but
#     "create container" with arbitrary options is itself root-equivalent unless the proxy also
#     filters the request body (binds, privileged, capabilities); most proxies filter by path only.
#   * DOCKER_HOST pointing at a dedicated sandbox VM (ssh:// or tcp:// with TLS): generated code and
#     the root-equivalent API then live on a machine that holds nothing else. The strongest option.
# Bind mounts the listener asks Docker for (the sandbox and production AppRole directories,
# VAULT_APPROLE_DIR and PROD_VAULT_APPROLE_DIR) are resolved by the engine on the ENGINE's host,
# not inside this container: mount those directories into the listener at the same path as on the
# host (docker-compose.yml does), because the listener checks them and passes its own path on.
#
# Build arguments:
#   PYTHON_IMAGE      base image (default python:3.12-slim)
#   WITH_CLAUDE_CLI   1 (default): install Node.js and the `claude` CLI from npm, which the default
#                     overseer command (CLAUDE_CMD="claude -p") runs inside this container; 0 for a
#                     smaller image when CLAUDE_CMD points elsewhere. Authenticate it with
#                     ANTHROPIC_API_KEY, or a claude login kept under $HOME (/var/lib/agent-builder).
#   CLAUDE_CODE_VERSION  npm version or tag of @anthropic-ai/claude-code (default 2.1.332, the version the
#                     overseer tests run against: .ci/claude-up)

ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY listener/ listener/
COPY sql/ sql/
COPY migrations/ migrations/
RUN python -m venv /opt/agent-builder \
 && /opt/agent-builder/bin/pip install . \
 && /opt/agent-builder/bin/python -c "import importlib.resources as r; assert r.files('listener.sql').joinpath('claim_next_build.sql').is_file(); assert any(p.name.endswith('.sql') for p in r.files('listener.migrations').iterdir())"

FROM ${PYTHON_IMAGE}
ARG WITH_CLAUDE_CLI=1
ARG CLAUDE_CODE_VERSION=2.1.332
RUN set -eux; \
    if [ "$WITH_CLAUDE_CLI" = 1 ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates nodejs npm; \
        npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"; \
        npm cache clean --force; \
        apt-get purge -y --auto-remove npm; \
        rm -rf /var/lib/apt/lists/* /root/.npm; \
        claude --version; \
    fi; \
    groupadd --system --gid 10001 agent-builder; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/agent-builder --shell /usr/sbin/nologin agent-builder; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/agent-builder
COPY --from=build /opt/agent-builder /opt/agent-builder

ENV PATH=/opt/agent-builder/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/agent-builder \
    AGENT_BUILDER_HOME=/var/lib/agent-builder \
    DISABLE_AUTOUPDATER=1

# To reach the Docker socket, add the socket's group at run time (compose: group_add, with the
# host's `stat -c %g /var/run/docker.sock`); membership of that group is root-equivalent (above).
USER 10001:10001
WORKDIR /var/lib/agent-builder

# 8787: one-tap approval endpoint (APPROVAL_ADDR, only when APPROVAL_BASE_URL and APPROVAL_SECRET
# are set). 8788: the recording endpoint sandboxes call (SANDBOX_HTTP_PORT; the default 0 picks a
# random port, so set SANDBOX_HTTP_PORT=8788 and publish it when the listener runs in a container).
EXPOSE 8787 8788

# `healthcheck` exits 0 only while a listener of this container's host (its hostname) is live in the
# listener registry (agent_builder_listeners): its registry session holds an advisory lock, so a
# hung-up or killed listener, a wrong DATABASE_URL, a database that is down or not migrated all
# make it fail at once, without waiting for a heartbeat to go stale.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD agent-builder healthcheck >/dev/null || exit 1

# SIGTERM stops the listener gracefully (running builds get SHUTDOWN_GRACE_S, default 30 s): give
# the container a longer stop timeout (compose: stop_grace_period). Run it with an init (compose:
# init: true) so that grandchildren of the overseer subprocess are reaped.
STOPSIGNAL SIGTERM
ENTRYPOINT ["agent-builder"]
CMD ["listen"]

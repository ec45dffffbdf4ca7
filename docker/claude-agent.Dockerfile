# The image claude_agent automations run in (SANDBOX_AGENT_IMAGE, default agent-builder-claude:latest):
# bash, the `claude` CLI from npm, and a few tools agent scripts commonly call. It needs no build
# context:
#
#   docker build -t agent-builder-claude:latest - < docker/claude-agent.Dockerfile
#
# For every claude_agent build the listener writes a small Dockerfile on top of it
# (listener/sandbox/levels.py, write_context):
#   FROM agent-builder-claude:latest
#   COPY agent.sh /app/agent.sh
#   RUN chmod 0755 /app/agent.sh && chown -R 65534:65534 /app
# That RUN must run as root, so the ONBUILD line below switches the derived build back to root
# (ONBUILD runs right after that FROM). The containers themselves never run as root: the listener
# starts every sandbox and production container as 65534:65534 with no capabilities, whatever the
# image says, and this image's own default user is that same unprivileged user.
#
# Build arguments: NODE_IMAGE (default node:22-bookworm-slim), CLAUDE_CODE_VERSION (default latest;
# pin it for reproducible sandboxes).

ARG NODE_IMAGE=node:22-bookworm-slim
FROM ${NODE_IMAGE}
ARG CLAUDE_CODE_VERSION=latest

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends bash ca-certificates curl jq; \
    rm -rf /var/lib/apt/lists/*; \
    npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"; \
    npm cache clean --force; \
    rm -rf /root/.npm; \
    claude --version; \
    install -d -m 1777 /home/agent; \
    install -d -o 65534 -g 65534 -m 0755 /app

# 65534 (nobody) has no home of its own; claude keeps its settings under $HOME.
ENV HOME=/home/agent \
    DISABLE_AUTOUPDATER=1 \
    DISABLE_TELEMETRY=1 \
    SHELL=/bin/bash

WORKDIR /app
USER 65534:65534
ONBUILD USER root
CMD ["bash"]

# The image claude_agent automations run in (SANDBOX_AGENT_IMAGE, default agent-builder-claude:latest):
# bash, the `claude` CLI from npm, and a few tools agent scripts commonly call. It needs no build
# context:
#
#   docker build -t agent-builder-claude:latest - < docker/claude-agent.Dockerfile
#
# For every claude_agent build the listener writes a small Dockerfile on top of it
# (listener/sandbox/levels.py, write_context), interpreted by its confined builder:
#   FROM agent-builder-claude:latest
#   WORKDIR /app
#   COPY agent.sh /app/agent.sh
#   COPY agent-builder-claude /opt/agent-builder/bin/claude
#   ENV PATH=/opt/agent-builder/bin:$PATH
# The second COPY is the builder's recording `claude` stand-in (listener/sandbox/standin.py): in a
# sandbox the agent's `claude` calls reach it, never the real CLI below, so no credentials or credits
# are needed there. The real CLI is for running the approved agent outside the sandbox. The containers
# never run as root: the listener starts every sandbox and production container as 65534:65534 with
# no capabilities, whatever the image says, and this image's own default user is that same user.
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

"""The deadline keeper: PID 1 of every sandbox container, so the sandbox ends on time by itself,
with or without a living listener.

Docker runs `/bin/sh -c STAGE1 …` as the container's first process. Stage 1 (POSIX sh) writes the
keeper (bash) to the keeper's tmpfs, opens it as fd 3 and deletes it, copies the image's bash next
to it with mode 0111 and execs that copy on /dev/fd/3. Executing a binary its user cannot read makes
the process non-dumpable (the kernel's would_dump), so the automation, which runs as the same user
65534, can neither ptrace it, nor read its /proc files (environ, fd, mem). As PID 1 of the
container's PID namespace it receives no signal from inside that it has no handler for: the
automation cannot kill or stop it, and `kill -KILL -1` from inside spares it. The signals bash
itself handles are ignored, except SIGALRM (older bash needs it for `read -t`): sent from inside it
ends the keeper, and so the sandbox, early, which an automation can do anyway by exiting; nothing
inside can make the sandbox outlive its deadline.

The keeper then runs the automation (its stdin /dev/null, in the working directory, with
oom_score_adj 1000 so that the kernel's OOM killer takes it first), and polls it from PID 1 itself
(`read -t` on a pipe only PID 1 holds: no child process the automation could stop), kills every
other process at the deadline (`kill -KILL -1`), and writes `<nonce> exit=<code> oom=<n>
timeout=<0|1>` to STATUS_PATH. The nonce comes in the container's environment and is removed before
the automation starts, so the automation cannot forge the line. The keeper then holds the container
(so that Level 4 still reads /tmp and the working directory, which are tmpfs and end with it) until
the deadline plus the hold, and exits; the container is created with auto-remove, so it is gone.

Why bash and not Python: the claude_agent image (docker/claude-agent.Dockerfile, node:*-slim) has no
python3, every image we build on has bash (Debian's python:*-slim and the agent image), and POSIX
sh (dash) has no timed wait without a child process, which the automation could SIGSTOP.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SANDBOX_WORKDIR = "/work"  # the automation's working directory (tmpfs); its code stays read-only in the image
KEEPER_DIR = "/run/agent-builder"
STATUS_PATH = f"{KEEPER_DIR}/status"
NONCE_VARIABLE = "AGENT_BUILDER_KEEPER_NONCE"
KEEPER_TMPFS_SIZE = "8m"  # the copy of bash (about 1.3 MB) and the status line
TICK_S = 0.05  # how often PID 1 looks at the automation

# Stage 1: POSIX sh. $1 is the keeper's text, then: limit, hold, working directory, source, argv.
STAGE1 = r"""d=/run/agent-builder
fail() { printf '%s error=%s\n' "${AGENT_BUILDER_KEEPER_NONCE-}" "$1" > "$d/status"; exec sleep "$2"; }
body=$1; shift
b=$(command -v bash) || fail "the image has no bash: the sandbox keeper needs /bin/sh, bash and coreutils" "$(($1 + $2))"
{ printf '%s' "$body" > "$d/keeper.bash" && exec 3< "$d/keeper.bash" && rm -f "$d/keeper.bash" &&
  cp "$b" "$d/bash" && chmod 0111 "$d/bash"; } ||
  fail "the sandbox keeper could not be set up in $d (the image needs coreutils: cp, chmod, rm)" "$(($1 + $2))"
exec "$d/bash" /dev/fd/3 "$@"
"""

# The keeper: bash, read whole (one function, called on the last line) before anything runs.
KEEPER = r"""keeper_now() {  # now, in microseconds (bash 5: EPOCHREALTIME; older: whole seconds); never forks
    local t=${EPOCHREALTIME:-$SECONDS.000000}
    now=${t//[.,]/}
}
keeper_main() {
    local limit=$1 hold=$2 workdir=$3 source=$4 dir=/run/agent-builder
    shift 4
    local now kill_at end_at
    keeper_now
    kill_at=$(( now + limit * 1000000 )) end_at=$(( now + (limit + hold) * 1000000 ))
    local nonce=${AGENT_BUILDER_KEEPER_NONCE-}
    unset AGENT_BUILDER_KEEPER_NONCE
    exec 3<&-
    trap '' HUP INT QUIT TERM USR1 USR2 PIPE TSTP TTIN TTOU ILL TRAP ABRT BUS FPE SEGV XCPU XFSZ VTALRM PROF SYS
    local tick entry
    exec {tick}<> <(:)
    rm -f -- "$dir/bash"
    if [[ -n $source && $source != / && $source != "$workdir" && -d $source ]]; then
        for entry in "$source"/* "$source"/.[!.]* "$source"/..?*; do
            if [[ -e $entry || -L $entry ]]; then ln -s -- "$entry" "$workdir/" 2>/dev/null; fi
        done
    fi
    (
        exec {tick}<&-
        cd -- "$workdir" || exit 126
        exec /bin/sh -c 'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"' sh "$@"
    ) </dev/null &
    local child=$! timed_out=0 round
    while kill -0 "$child" 2>/dev/null; do
        keeper_now
        if (( now >= kill_at )); then timed_out=1; break; fi
        read -r -t TICK -u "$tick" _
    done
    for round in 1 2 3; do kill -KILL -1 2>/dev/null; done
    wait "$child"
    local code=$? oom=0 file key value
    for file in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
        if [[ -r $file ]]; then
            while read -r key value; do if [[ $key == oom_kill ]]; then oom=$value; fi; done < "$file"
        fi
    done
    printf '%s exit=%s oom=%s timeout=%s\n' "$nonce" "$code" "$oom" "$timed_out" > "$dir/status"
    keeper_now
    while (( now < end_at )); do
        read -r -t 0.5 -u "$tick" _
        keeper_now
    done
}
keeper_main "$@"; exit 0
""".replace("TICK", f"{TICK_S:g}")

_STATUS = re.compile(r"^(?P<nonce>\S+) (?:exit=(?P<exit>\d+) oom=(?P<oom>\d+) timeout=(?P<timeout>[01])|error=(?P<error>.*))\n")


@dataclass(frozen=True)
class KeeperStatus:
    """What the keeper recorded: the automation's end, or why the keeper could not start."""

    exit_code: int | None
    timed_out: bool = False
    oom_kills: int = 0
    error: str | None = None


def keeper_command(argv: list[str], *, limit_s: float, hold_s: float, workdir: str,
                   source_dir: str) -> tuple[list[str], list[str]]:
    """(entrypoint, command) that run `argv` under the keeper: killed `limit_s` after the start,
    the container gone `hold_s` later. `source_dir` (the image's WORKDIR) is linked into `workdir`."""
    entrypoint = ["/bin/sh", "-c", STAGE1, "agent-builder-keeper"]
    command = [KEEPER, str(math.ceil(limit_s)), str(math.ceil(hold_s)), workdir, source_dir, *argv]
    return entrypoint, command


def parse_status(text: str, nonce: str) -> KeeperStatus | None:
    """The keeper's status line, or None when there is none yet, it is incomplete, or it does not
    carry this run's nonce (the automation wrote it)."""
    match = _STATUS.match(text)
    if match is None or match.group("nonce") != nonce:
        return None
    if match.group("error") is not None:
        return KeeperStatus(exit_code=None, error=match.group("error"))
    timed_out = match.group("timeout") == "1"
    return KeeperStatus(exit_code=None if timed_out else int(match.group("exit")), timed_out=timed_out,
                        oom_kills=int(match.group("oom")))

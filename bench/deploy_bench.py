"""Production deployment figures on the real engine (needs .ci/docker-up):

1. crash-loop catch rate: services that exit after 0.1-1.0 s under restart policy unless-stopped,
   judged by the old check (sleep PROD_VERIFY_S, one inspect, status == running) and by the
   deployment's watch (listener.deploy.production._watch_service);
2. the swap: how long the production name is missing (rename events, engine clock), and how long
   the whole swap takes, for a previous version that stops on SIGTERM.

Every container it makes carries a bench installation label and is removed by id at the end.

    python bench/deploy_bench.py [--trials 20] [--verify 2] [--swaps 10]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import threading
import time
from typing import Any

import docker
from loguru import logger

from listener.config import Settings
from listener.deploy.production import Names, Swap, _watch_service, production_options

BASE = "agent-builder-test-base:latest"
SERVICE = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nwhile True: time.sleep(1)"


def crash_rates(client: Any, settings: Settings, installation: str, trials: int, verify_s: float) -> None:
    for judge in ("one sample (before)", "watch (after)"):
        caught, took = 0, []
        for i in range(trials):
            delay = 0.1 + 0.9 * i / max(1, trials - 1)
            options = production_options(settings, installation, 1, i, "service", f"deploy-bench-{installation}-{i}")
            container = client.containers.create(BASE, ["python3", "-c", f"import time; time.sleep({delay}); exit(1)"],
                                                 **options)
            began = time.monotonic()
            try:
                if judge.startswith("one"):
                    container.start()
                    time.sleep(verify_s)
                    container.reload()
                    failed = container.status != "running"
                else:
                    failed = _watch_service(client, container, verify_s) is not None
            finally:
                container.remove(force=True)
            caught += failed
            took.append(time.monotonic() - began)
        print(f"crash loop, {judge}: caught {caught}/{trials} (PROD_VERIFY_S={verify_s:g}, crash after 0.1-1.0 s), "
              f"verdict after median {statistics.median(took):.2f} s")


def swaps(client: Any, settings: Settings, installation: str, rounds: int) -> None:
    gaps, totals = [], []
    image = client.images.get(BASE)
    for i in range(rounds):
        names = Names(f"deploy-bench-{installation}-swap")
        old, new = (client.containers.create(BASE, ["python3", "-c", SERVICE],
                                             **production_options(settings, installation, 2, i + k, "service", name))
                    for k, name in enumerate((names.final, names.next)))
        old.start()
        new.start()
        old.reload()
        events: list[dict[str, Any]] = []
        stream = client.events(decode=True, filters={"type": "container", "event": "rename",
                                                     "label": f"io.agent-builder.installation={installation}"})
        pump = threading.Thread(target=lambda: events.extend(stream), daemon=True)
        pump.start()
        began = time.monotonic()
        problem = Swap(client=client, names=names, candidate=new, current=old, image=image, mode="service",
                       installation=installation, stop_timeout_s=settings.prod_stop_timeout_s, log=logger).run()
        totals.append(time.monotonic() - began)
        time.sleep(0.2)
        stream.close()
        pump.join(5)
        assert problem is None, problem
        renamed = {e["id"]: int(e["timeNano"]) for e in events}
        gaps.append((renamed[new.id] - renamed[old.id]) / 1e6)
        new.remove(force=True)
        client.api.remove_image(f"{names.final}:production-{installation}", noprune=True)  # the tag Swap added
    print(f"swap ({rounds} rounds): name missing median {statistics.median(gaps):.1f} ms, max {max(gaps):.1f} ms; "
          f"whole swap median {statistics.median(totals) * 1000:.0f} ms, max {max(totals) * 1000:.0f} ms; "
          "a running version at every moment")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--verify", type=float, default=2.0)
    parser.add_argument("--swaps", type=int, default=10)
    args = parser.parse_args()
    logger.remove()
    client = docker.from_env(timeout=120)
    installation = "bench" + secrets.token_hex(4)
    settings = Settings.from_env({"PROD_NETWORK": "none"})
    try:
        if args.trials:
            crash_rates(client, settings, installation, args.trials, args.verify)
        if args.swaps:
            swaps(client, settings, installation, args.swaps)
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.agent-builder.installation={installation}"}):
            container.remove(force=True)


if __name__ == "__main__":
    main()

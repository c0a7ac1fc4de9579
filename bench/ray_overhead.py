"""What Ray costs per task, and a sweep through the Ray backend against the local one, in one run.

    python bench/ray_overhead.py [--calls 300] [--benchmark rev-loss] [--mixtures 15] [--workers 1]

1. Start-up: ray.init of a local cluster, and the first actor holding demo-k3's engine (loads the lab).
2. Per task: an actor call that returns three cached-score rows (what a mixture's result carries back),
   one at a time (the round trip) and pipelined (throughput), against the same method called in-process.
3. A sweep of demo-k3 (Dirichlet(1) mixtures, new ones each repeat) on one benchmark: local backend vs Ray backend (--workers actors), each on a fresh
   cache, interleaved; the ratio ray ÷ local is the scheduling overhead at this task size (with 1 worker
   both use the same cores; more workers add parallelism the 2 cores here do not have).

Needs requirements-ray.txt. Nothing asserts; it prints numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.demo import LABS_DIR  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.run.executors import LocalBackend, RayBackend  # noqa: E402
from mixlab.simplex import Mixture, dirichlet  # noqa: E402
from mixlab.store import Evaluation, Store  # noqa: E402


class Echo:
    def __init__(self):
        self.rows = [
            Evaluation(f"k{i}", "demo-k3", "proxy", "a=0.3 …", "fp", "rev", "exact_match", 0.5, True, 600, "cpu", 1.0)
            for i in range(3)
        ]

    def score(self, weights, method, params):
        return self.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--benchmark", default="rev-loss")
    ap.add_argument("--mixtures", type=int, default=15)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    init_s = time.perf_counter() - t

    echo = ray.remote(num_cpus=1)(Echo).remote()
    ray.get(echo.score.remote([0.3, 0.3, 0.4], "linear", {}))
    here = Echo()
    w = [0.3, 0.3, 0.4]
    t = time.perf_counter()
    for _ in range(args.calls):
        ray.get(echo.score.remote(w, "linear", {}))
    round_trip = (time.perf_counter() - t) / args.calls
    t = time.perf_counter()
    ray.get([echo.score.remote(w, "linear", {}) for _ in range(args.calls)])
    pipelined = (time.perf_counter() - t) / args.calls
    t = time.perf_counter()
    for _ in range(args.calls):
        here.score(w, "linear", {})
    local_call = (time.perf_counter() - t) / args.calls
    ray.kill(echo)

    lab = load_lab(LABS_DIR / "demo-k3")
    grids = [  # new points each repeat: the actors' engines keep what they computed
        [Mixture.of(lab.expert_names, p) for p in dirichlet(3, args.mixtures, 1.0, seed)]
        for seed in range(args.repeats)
    ]
    grid = grids[0]
    rb = RayBackend(workers=args.workers, device="cpu")
    t = time.perf_counter()
    rb.actors(Engine(lab, Store(":memory:"), device="cpu"))
    actor_s = time.perf_counter() - t

    local_s, ray_s = [], []
    for grid in grids:
        e = Engine(lab, Store(":memory:"), device="cpu")
        e.resident  # noqa: B018 (the local engine's start-up is not timed, as the actors' is not)
        t = time.perf_counter()
        LocalBackend().run(e, e.request(grid, benchmarks=[args.benchmark]))
        local_s.append(time.perf_counter() - t)
        e = Engine(lab, Store(":memory:"), device="cpu")
        t = time.perf_counter()
        r = rb.run(e, e.request(grid, benchmarks=[args.benchmark]))
        ray_s.append(time.perf_counter() - t)
        assert not r.failed, r.summary()
    ratios = [b / a for a, b in zip(local_s, ray_s)]

    print(f"ray {ray.__version__}; 2 CPUs; demo-k3, {len(grid)} mixtures on {args.benchmark}\n")
    print("| what | value |\n|---|---|")
    print(f"| ray.init (local cluster) | {init_s:.2f} s |")
    print(f"| {args.workers} actor(s) with demo-k3's engine, started and checked | {actor_s:.2f} s |")
    print(f"| actor call, round trip (3 score rows back) | {round_trip * 1e3:.2f} ms |")
    print(f"| actor call, pipelined | {pipelined * 1e3:.2f} ms |")
    print(f"| the same call in-process | {local_call * 1e6:.1f} µs |")
    print(
        f"| sweep, local backend | {statistics.median(local_s):.2f} s ({statistics.median(local_s) / len(grid) * 1e3:.0f} ms/mixture) |"
    )
    print(f"| sweep, Ray backend, {args.workers} worker(s) | {statistics.median(ray_s):.2f} s |")
    print(f"| Ray ÷ local (median of paired ratios) | {statistics.median(ratios):.2f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()

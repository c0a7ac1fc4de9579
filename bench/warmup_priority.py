"""Would a lower priority for the app's warm-up thread help a page that runs beside it?

    python bench/warmup_priority.py plain|nice

One process: a page-like workload (pandas group-by, JSON, string formatting) timed alone, then again and again
while a second thread imports torch and transformers as the warm-up does — at normal priority (``plain``) or
with the thread's nice value set to 19 (``nice``: ``os.setpriority`` on its native thread id, Linux). Prints
the page's median time alone and during the import, and how long the import took. Run each mode in a fresh
process (the import happens once per process), alternately, a few times. Nothing asserts a time.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np
import pandas as pd


def main(mode: str) -> None:
    df = pd.DataFrame({"a": np.arange(20000) % 97, "b": np.random.default_rng(0).random(20000)})

    def page() -> float:
        t = time.perf_counter()
        for _ in range(3):
            g = df.groupby("a")["b"].agg(["mean", "std"]).reset_index()
            json.loads(json.dumps(g.to_dict("records")))
            [str(x) for x in range(20000)]
        return time.perf_counter() - t

    alone = sorted(page() for _ in range(5))[2]
    done: dict[str, float] = {}

    def warm() -> None:
        if mode == "nice":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        t = time.perf_counter()
        import transformers

        transformers.AutoModelForCausalLM  # noqa: B018 (resolves the lazy module, as mixlab.names.import_stack)
        done["import"] = time.perf_counter() - t

    thread = threading.Thread(target=warm)
    thread.start()
    during = []
    while thread.is_alive():
        during.append(page())
    during.sort()
    print(
        f"{mode}: page alone {alone:.3f} s, during the import {during[len(during) // 2]:.3f} s (median of "
        f"{len(during)}); the import took {done['import']:.1f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain")

"""``mixlab jobs``: the jobs the dashboard ran on a lab, and --resume / --cancel for one of them."""

from __future__ import annotations

import json

from mixlab.cli.common import Bar, lab_command, open_engine
from mixlab.errors import MixlabError


def add_commands(sub) -> None:
    s = lab_command(
        sub,
        "jobs",
        "Jobs the dashboard ran on this lab (every session's, kept in the lab's cache), and --resume ID for one "
        "that was interrupted, failed or cancelled (cached scores are not recomputed).",
        cmd_jobs,
    )
    s.add_argument("--resume", default=None, metavar="ID", help="run a stopped job again")
    s.add_argument("--cancel", default=None, metavar="ID", help="ask the process running a job to cancel it")
    s.add_argument("--json", action="store_true", help="print the records as JSON")


def cmd_jobs(args) -> None:
    import time

    from mixlab.run.jobs import Worker, resume
    from mixlab.run.records import ACTIVE

    engine = open_engine(args)
    records = engine.store.jobs(engine.lab.name)
    if args.cancel:
        record = next((r for r in records if r["id"] == args.cancel), None)
        if record is None or record["state"] not in ACTIVE:
            state = "not recorded" if record is None else record["state"]
            raise MixlabError(
                f"job {args.cancel!r} is {state} in {engine.store.path}; only a running job can be cancelled"
            )
        engine.store.request_cancel(args.cancel)
        print(f"asked process {record['pid']} to cancel job {args.cancel}: it stops at its next progress step")
        return
    if args.resume:
        record = next((r for r in records if r["id"] == args.resume), None)
        if record is None:
            raise MixlabError(f"no job {args.resume!r} in {engine.store.path}; `mixlab jobs LAB` lists them")
        if record["state"] in ACTIVE:
            raise MixlabError(f"job {args.resume} is {record['state']} in process {record['pid']}; it is not stopped")
        worker = Worker()
        with Bar(f"resuming {record['description']}") as bar:
            job = resume(worker, engine, record)
            while job.active:
                bar(job.done, job.total or 1, job.message)
                time.sleep(0.2)
        if job.state != "done":
            raise MixlabError(f"job {args.resume} {job.state}: {job.error or ''}")
        print(f"job {args.resume} done: {len(job.result)} scores in {engine.store.path}")
        return
    if args.json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        print(f"no jobs recorded in {engine.store.path}")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        error = f"  ({r['error'].splitlines()[0]})" if r["error"] else ""
        print(f"{r['id']}  {when}  {r['state']:<11} {r['done']}/{r['total']}  {r['description']}{error}")

"""``profd status``: the daemon's heartbeat file, the queue and the last results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from profd.service.jobqueue import JobQueue
from profd.paths import state_dir
from profd.store import Store


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def gather_status() -> dict[str, Any]:
    """Everything status shows, as plain data (also the --json output)."""
    sd = state_dir()
    daemon: dict[str, Any] = {}
    f = sd / "daemon.json"
    if f.exists():
        try:
            daemon = json.loads(f.read_text())
        except json.JSONDecodeError:
            daemon = {}
    running = bool(daemon) and daemon.get("watcher") != "stopped" and _alive(int(daemon.get("pid", 0))) \
        and time.time() - float(daemon.get("heartbeat", 0)) < 300
    with Store() as store:
        q = JobQueue(store)
        # Where each job runs (ran): the slot that claimed it, from the jobs table.
        where = store.job_slots(recent=10)
        pending = [dict(j.to_dict(), worker=where.get(j.id, "")) for j in q.pending()]
        recent = [dict(j.to_dict(), worker=where.get(j.id, "")) for j in q.recent(10)]
        counts = q.counts()
        last = []
        for target in store.targets():
            runs = store.history(target, limit=1)
            if runs:
                last.append(runs[0].to_dict())
    data: dict[str, Any] = {"running": running, "state_dir": str(sd), "daemon": daemon, "queue": pending,
                            "workers": daemon.get("workers", []) if running else [], "recent_jobs": recent,
                            "job_counts": counts, "last_results": last}
    try:
        from profd.report.mail import outbox_status

        data["mail"] = outbox_status().to_dict()
    except ImportError:
        pass
    return data


def render(data: dict[str, Any]) -> str:
    """Human text for ``profd status``."""
    d = data["daemon"]
    lines = []
    if data["running"]:
        lines.append(f"profd is running (pid {d['pid']}, {d['mode']}, up {time.time() - d['started_at']:.0f} s)")
        lines.append(f"  watching: {', '.join(d['watched']) or '-'} ({d['watcher']})")
        if d.get("watcher_note"):
            lines.append(f"  note: {d['watcher_note']}")
        lines.append(f"  device: {d.get('gpu', '?')}; warm worker: {'yes' if d.get('warm_worker') else 'no'}")
        workers = data.get("workers") or []
        if workers:
            lines.append(f"  workers ({d.get('executor') or 'local'} executor, {len(workers)} slot(s)):")
            for w in workers:
                j = w.get("job")
                doing = (f"job {j['id']} {j['kind']} {Path(j['path']).name} ({j['running_s']} s)" if j
                         else w.get("state", "?"))
                note = f" — {w['note']}" if w.get("note") else ""
                lines.append(f"    {w['id']:<22} {doing}; {w.get('jobs_done', 0)} done; {w.get('device', '')}{note}")
        else:
            cj = d.get("current_job")
            lines.append(f"  current job: {cj['id']} {cj['kind']} {Path(cj['path']).name} ({cj['running_s']} s)"
                         if cj else "  current job: none")
    else:
        lines.append("profd is not running" + (f" (last seen pid {d.get('pid')})" if d else ""))
    lines.append(f"  state: {data['state_dir']}")
    q = data["queue"]
    lines.append(f"queue: {len(q)} pending" + "".join(
        f"\n  job {j['id']}: {j['kind']} {Path(j['path']).name} ({j['state']}"
        f"{' on ' + j['worker'] if j['state'] == 'running' and j.get('worker') else ''})" for j in q[:10]))
    done = [j for j in data.get("recent_jobs", []) if j["state"] not in ("queued", "running")]
    if done:
        lines.append("recent jobs:")
        for j in done[:5]:
            lines.append(f"  job {j['id']}: {j['kind']} {Path(j['path']).name} {j['state']}"
                         f"{' on ' + j['worker'] if j.get('worker') else ''}")
    if data["last_results"]:
        lines.append("last results:")
        for r in data["last_results"]:
            t = f"{r['median_ms']:.4g} ms" if r["median_ms"] is not None else "-"
            lines.append(f"  {Path(r['target']).name:30} {r['status']:14} {t:>12}  {r['device'] or ''}")
    mail = data.get("mail")
    if mail and mail.get("pending"):
        nxt = mail.get("next_attempt_at")
        when = f"; next try at {time.strftime('%H:%M:%S', time.localtime(nxt))}" if nxt else ""
        lines.append(f"mail: {mail['pending']} report(s) not sent after {mail.get('attempts', 0)} attempt(s){when}; "
                     f"last error: {mail.get('last_error', '')}")
    if mail and mail.get("last_delivered"):
        d = mail["last_delivered"]
        lines.append(f"mail: last kept report delivered {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['delivered_at']))}"
                     f" after {d['attempts']} attempt(s)")
    return "\n".join(lines)


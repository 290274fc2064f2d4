"""``profd apply``: the only way profd ever changes a user's file.

It writes the best kept candidate of the latest tuning session, only if the file
still has the content that session started from (unless forced), after saving a
backup beside it; the write is atomic (temp file + rename), so an editor or the
watcher never sees a half-written kernel.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from profd.store import Store
from profd.harness.target import content_hash


class ApplyError(Exception):
    """Nothing to apply, or applying would lose the user's newer edits."""


class AlreadyApplied(ApplyError):
    """The file already holds the candidate: a second ``profd apply`` has nothing to do."""


@dataclass
class Applied:
    target: str
    candidate: str
    session_id: int
    backup: str
    speedup: Optional[float]
    diff: str
    note: str = ""  # what the speedup means (empty for a GPU measurement)

    def message(self) -> str:
        """What ``profd apply`` prints: what was written, the backup, how much faster and what that means."""
        speed = f" ({self.speedup:.2f}x faster than the original)" if self.speedup else ""
        note = f"\nnote: the speedup was {self.note}" if self.note else ""
        return (f"applied {self.candidate} from tuning session {self.session_id} to {self.target}{speed}{note}\n"
                f"backup: {self.backup}\n\n{self.diff}")


def _require_confirmed(source_path: Path, source: str, cand_id: str) -> None:
    """Refuse a candidate the judge did not confirm in fresh processes on fresh inputs (issue #14)."""
    import json

    from profd.flow.tune import source_sha256

    try:
        record = json.loads((source_path.parent / "verdict.json").read_text())
    except (OSError, ValueError):
        record = {}
    if not record.get("confirmed"):
        raise ApplyError(f"candidate {cand_id} was not confirmed by profd's judge (re-timed and re-checked against "
                         "the reference in a fresh process on fresh inputs), so profd will not write it into your "
                         "file. It was probably kept by an older profd: run `profd tune` again.")
    if record.get("source_sha256") != source_sha256(source):
        raise ApplyError(f"candidate {cand_id}'s source in the state directory is not the source the judge "
                         "confirmed (its digest differs); profd will not apply it. Run `profd tune` again.")


def apply_best(path: Path, store: Store, *, force: bool = False, session_id: Optional[int] = None) -> Applied:
    """Write the best candidate of the latest (or given) tuning session into ``path``."""
    path = Path(path).resolve()
    row = store.kept_session(path, session_id)
    if row is None:
        raise ApplyError(f"no tuning session of {path.name} kept a candidate. Run `profd tune {path}` first; "
                         "only candidates that were correct and faster beyond noise can be applied.")
    cand = store.accepted_candidate(row["id"], row["best_candidate"])
    if cand is None or not Path(cand["source_path"]).exists():
        raise ApplyError(f"the kept candidate {row['best_candidate']} of session {row['id']} is missing from the "
                         "state directory; run `profd tune` again.")
    new = Path(cand["source_path"]).read_text()
    if content_hash(path) != row["base_hash"] and not force:
        if path.read_text() == new:
            raise AlreadyApplied(f"{path.name} already holds candidate {row['best_candidate']} of tuning session "
                                 f"{row['id']} (applied before): nothing to do. The backup of the original is beside "
                                 f"it ({path.name}.profd-*.bak).")
        raise ApplyError(f"{path.name} changed since tuning session {row['id']} started from it; applying would "
                         "overwrite your newer edits. Tune again, or pass --force to replace the file anyway "
                         "(a backup is kept).")
    _require_confirmed(Path(cand["source_path"]), new, cand["candidate_id"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.profd-{stamp}.bak")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.profd-tmp")
    tmp.write_text(new)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    # The session's baseline is the first run of the target once the session started.
    base = store.first_run_since(path, row["device"], row["started_at"])
    note = ""
    if base is not None and not base.representative:
        from profd.flow.tune import INTERPRETER_SPEEDUP_NOTE

        note = INTERPRETER_SPEEDUP_NOTE
    return Applied(str(path), cand["candidate_id"], row["id"], str(backup), cand["speedup"], cand["diff"] or "", note)

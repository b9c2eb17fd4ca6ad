"""Group commit of the hot writes (the PostgreSQL store): workflow starts, step checkpoints
and workflow outcomes, from every thread, in one statement and one commit.

A workflow of n steps costs n + 2 writes: its row, its checkpoints, its outcome. Threads (and
tasks) running workflows side by side each used to commit their own start and outcome, and
grouped only checkpoints with checkpoints, so a batch held whatever few checkpoints happened to
meet. Here every hot write goes through one ``GroupCommitter``: a lone caller writes alone, at
once, with the single statement of its kind; callers that arrive while writes are in flight are
written together by whoever finishes a write next, whatever their kinds, in one statement of
three data-modifying CTEs (starts, checkpoints, outcomes) and one commit. Nobody is answered
before the statement carrying their write has committed.

One statement sees one snapshot, so no write of a batch may depend on another of the same
batch. None does: a run checkpoints only once its start was acknowledged and finishes only
after its checkpoints were, so a workflow's start, checkpoints and outcome never meet in one
batch; two checkpoints of one workflow may (concurrent steps), at different positions.

Enqueues (a new ENQUEUED or DELAYED row: nobody here runs it now) have a committer of their
own, grouped with each other only. Their callers (request threads, producers) otherwise
queued behind the workers' checkpoints and outcomes for one of the few seats: with 4 threads
enqueueing onto a queue of 32 workers, the workflows ran exactly as fast as they could be
enqueued, and a second set of seats took that from ~330 to ~490 workflows/s (queue4p,
loaded machine). Starts of workflows run here stay with the workers' writes, so a workload
without enqueues writes as before.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from waypoint.storage.postgres.group_commit import Done, GroupCommitter
from waypoint.storage.records import (
    Completion,
    InitOutcome,
    NewWorkflow,
    Outcome,
    RecordOutcome,
    StepRecord,
)
from waypoint.storage.sql_base import (
    RECORD_COLUMNS,
    RECORD_KEYS,
    created_outcome,
    init_params,
    record_params,
)

if TYPE_CHECKING:
    from waypoint.storage.sql_base import Dialect, Params, Row

Write = Union[NewWorkflow, StepRecord, Completion]
Answer = Union[InitOutcome, RecordOutcome, bool]

# The columns of a checkpoint, as the batch's JSON document hands them over (the keys of
# ``record_params``), with their types.
_RECORD_TYPES = {"fid": "int", "started": "bigint", "completed": "bigint"}
_RECORD_COLUMNS = tuple((key, _RECORD_TYPES.get(key, "text")) for key in RECORD_KEYS)
# A workflow's outcome: its parameters (named in a batch's JSON document, in this order as the
# one-row statement's positional values) and the Completion fields they hold.
_DONE_COLUMNS = (
    ("id", "text"),
    ("owner", "text"),
    ("status", "text"),
    ("output", "text"),
    ("error", "text"),
    ("now", "bigint"),
)
DONE_KEYS = tuple(name for name, _ in _DONE_COLUMNS)
done_values: Callable[[Completion], tuple[Any, ...]] = operator.attrgetter(
    "workflow_id", "owner_xid", "status", "output", "error", "now_ms"
)


def _rows(name: str, columns: Sequence[tuple[str, str]]) -> str:
    """The rows of the JSON document ``%(<name>)s`` as a table ``d``, sent as one text
    parameter: psycopg dumped the 17 arrays this took before at ~190 us a batch of 16
    checkpoints, and the server parsed them at ~100 us; one JSON document costs ~30 and ~55.
    The LIMIT, the number of rows, gives the planner the count an array's length gave it
    (a function's rows are otherwise guessed at 100), so a few outcomes are still found by
    their keys, not by reading every PENDING row."""
    typed = ", ".join(f"{col} {kind}" for col, kind in columns)
    return (
        f"(SELECT * FROM json_to_recordset(%({name})s::json) AS d({typed}) LIMIT %({name}_n)s) AS d"
    )


# For the rest of the batch's own transaction: the foreign-key check of each checkpoint row
# (a query PostgreSQL prepares once per session) may keep its plan, which can only be a
# lookup by workflow_status's key; the session plans every other statement for its values
# (store.py). Re-planned per row, the check was ~0.05 ms of a checkpoint's server time.
_KEEP_RI_PLANS = "SELECT set_config('plan_cache_mode', 'auto', true) AS v"


class GroupedWrites:
    """Starts of top-level workflows, step checkpoints and outcomes, grouped across callers."""

    if TYPE_CHECKING:
        d: Dialect
        pool_size: int
        _sql_init_many: str

        def _all(self, sql: str, params: Params, what: str) -> list[Row]: ...
        def _wake_after_commit(self, *keys: str) -> None: ...
        def _existing(self, wf: NewWorkflow) -> InitOutcome: ...
        def _woken_by(self, wf: NewWorkflow) -> None: ...
        def _init_top(self, wf: NewWorkflow) -> InitOutcome: ...
        def _record_one(self, rec: StepRecord) -> RecordOutcome: ...
        def _complete_one(self, done: Completion) -> bool: ...
        def _outcome_one(self, workflow_id: str) -> Optional[Outcome]: ...
        def _outcomes_of(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]: ...

    def _setup_grouped(self) -> None:
        # Few writes in flight, so that more callers meet in each: on a busy machine every
        # statement costs CPU that a bigger batch shares (20 connections: 3 in flight).
        def committer(blocking: Optional[int]) -> GroupCommitter[Write, Answer]:
            return GroupCommitter(
                self._write_one,
                self._write_many,
                max_leaders=max(2, self.pool_size // 6),
                max_blocking_leaders=blocking,
            )

        # The workers' writes: threads waiting on them take one seat (group_commit.py). 32
        # threads of 10-step workflows: ~35 % less CPU a workflow (client and server) than
        # with 3, ~20 % more workflows/s at load 5-8; dequeued one-step workflows as fast or
        # faster. An event loop's tasks keep the 3 (async32 was faster with them).
        self._writes = committer(1)
        # Enqueues' own seats (module docstring), all for any caller: their producers are
        # few and each waits for its answer, so there a second write in flight halves the
        # wait rather than splitting a batch (4 producers: ~30 % slower with one seat).
        self._enqueues = committer(None)
        # Status reads, grouped the same way: every run reads its workflow's status before an
        # operation when it last knew it more than ``status_freshness`` ago, which is every
        # recovered or dequeued run that waited for a worker thread; 2,000 recovered at once
        # made 2,000 reads. A batch is read by a statement begun after each of its callers
        # asked, so no answer is older than the question.
        self._reads: GroupCommitter[str, Optional[Outcome]] = GroupCommitter(
            self._outcome_one, self._read_many, max_leaders=max(1, self.pool_size // 10)
        )
        ws, oo = self.d.t("workflow_status"), self.d.t("operation_outputs")
        # Column lists and types as the one-row statements have them (``_sql_init_many``).
        insert_starts = self._sql_init_many.replace("%(rows)s", "%(i_rows)s")
        picked = ", ".join(f"d.{name}" for name, _ in _RECORD_COLUMNS)
        self._sql_grouped = (
            f"WITH cfg AS MATERIALIZED ({_KEEP_RI_PLANS}), ins AS ({insert_starts}), "
            f"rec AS (INSERT INTO {oo} ({RECORD_COLUMNS}) SELECT {picked} "
            f"FROM {_rows('s_rows', _RECORD_COLUMNS)} CROSS JOIN cfg "
            f"JOIN {ws} w ON w.workflow_uuid = d.wf AND w.owner_xid = d.owner "
            f"ON CONFLICT (workflow_uuid, function_id) DO UPDATE SET owner_xid = {oo}.owner_xid "
            f"RETURNING {oo}.workflow_uuid, {oo}.function_id, {oo}.owner_xid, "
            f"(SELECT status FROM {ws} s WHERE s.workflow_uuid = {oo}.workflow_uuid) AS status), "
            f"done AS (UPDATE {ws} SET status = d.status, output = d.output, error = d.error, "
            "updated_at = d.now, completed_at = d.now, deduplication_id = NULL "
            f"FROM {_rows('c_rows', _DONE_COLUMNS)} "
            f"WHERE {ws}.workflow_uuid = d.id AND {ws}.status = 'PENDING' "
            f"AND {ws}.owner_xid = d.owner RETURNING {ws}.workflow_uuid, {ws}.queue_name) "
            "SELECT 'i', workflow_uuid, NULL::int, NULL::text, NULL::text FROM ins "
            "UNION ALL SELECT 's', workflow_uuid, function_id, owner_xid, status FROM rec "
            "UNION ALL SELECT 'c', workflow_uuid, NULL::int, queue_name, NULL::text FROM done"
        )

    # -- the store's entry points ---------------------------------------------------------------
    def _committer(self, write: Write) -> GroupCommitter[Write, Answer]:
        """Enqueues are grouped with enqueues, every other write with the rest."""
        if isinstance(write, NewWorkflow) and write.status != "PENDING":
            return self._enqueues
        return self._writes

    def _start_top(self, wf: NewWorkflow) -> InitOutcome:
        out = self._committer(wf).submit(wf)
        assert isinstance(out, InitOutcome)
        return out

    def record_step(self, rec: StepRecord) -> RecordOutcome:
        out = self._writes.submit(rec)
        assert isinstance(out, RecordOutcome)
        return out

    def complete_workflow(self, done: Completion) -> bool:
        return bool(self._writes.submit(done))

    def queue_write(self, write: Write, done: Done[Answer]) -> bool:
        """Join the next group commit without a waiting thread (async callers): see
        ``SystemStore.queue_write``. A child's start (with its link) is not a grouped write
        and must not be passed here."""
        self._committer(write).queue(write, done)
        return True

    def get_outcome(self, workflow_id: str) -> Optional[Outcome]:
        return self._reads.submit(workflow_id)

    def _read_many(self, workflow_ids: list[str]) -> list[Optional[Outcome]]:
        found = self._outcomes_of(list(dict.fromkeys(workflow_ids)))
        return [found.get(w) for w in workflow_ids]

    # -- writing --------------------------------------------------------------------------------
    def _write_one(self, w: Write) -> Answer:
        if isinstance(w, StepRecord):
            return self._record_one(w)
        if isinstance(w, Completion):
            return self._complete_one(w)
        return self._init_top(w)

    def _write_many(self, writes: list[Write]) -> list[Answer]:
        """Write a batch in one statement. Raises (so each is then written alone) on two
        writes of one row or on any database error, a deduplication conflict included."""
        starts = [w for w in writes if isinstance(w, NewWorkflow)]
        recs = [w for w in writes if isinstance(w, StepRecord)]
        # One lock order for every writer of outcomes (two batches never wait on each other).
        dones = sorted(
            (w for w in writes if isinstance(w, Completion)), key=lambda d: d.workflow_id
        )
        _distinct([wf.workflow_id for wf in starts], "workflow starts")
        _distinct([(r.workflow_id, r.function_id) for r in recs], "checkpoints")
        _distinct([d.workflow_id for d in dones], "workflow outcomes")
        rows = [{k: v for k, v in init_params(wf).items() if v is not None} for wf in starts]
        outcomes = [dict(zip(DONE_KEYS, done_values(d), strict=True)) for d in dones]
        params: Params = {
            "i_rows": json.dumps(rows),
            "s_rows": json.dumps([record_params(r) for r in recs]),
            "s_rows_n": len(recs),
            "c_rows": json.dumps(outcomes),
            "c_rows_n": len(dones),
        }
        found: dict[tuple[str, str, Optional[int]], Row] = {
            (r[0], r[1], r[2]): r for r in self._all(self._sql_grouped, params, "group commit")
        }
        out: list[Answer] = []
        keys: list[str] = []
        for w in writes:
            if isinstance(w, StepRecord):
                hit = found.get(("s", w.workflow_id, w.function_id))
                out.append(
                    RecordOutcome(accepted=False, workflow_status=None)
                    if hit is None
                    else RecordOutcome(accepted=hit[3] == w.owner_xid, workflow_status=hit[4])
                )
            elif isinstance(w, Completion):
                hit = found.get(("c", w.workflow_id, None))
                if hit is not None:
                    keys += [f"d:{w.workflow_id}", *([f"q:{hit[3]}"] if hit[3] else [])]
                out.append(hit is not None)
            elif ("i", w.workflow_id, None) in found:
                self._woken_by(w)
                out.append(created_outcome(w))
            else:
                out.append(self._existing(w))
        if keys:
            self._wake_after_commit(*dict.fromkeys(keys))
        return out


def _distinct(keys: Sequence[object], what: str) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError(f"the same row twice in one batch of {what}")

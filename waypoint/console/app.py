"""The console's routes: each page reads through the operations layer and renders a template;
each action is a form POST that acts, logs who did what, and redirects (post/redirect/get).

Handlers are plain functions: Starlette runs them on its thread pool, where the operations'
blocking database calls belong.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from waypoint._api.ops import fleet as fleet_ops
from waypoint._api.ops import observe, schedules, workflows
from waypoint._api.ops.base import Ops, as_ops
from waypoint.console import views
from waypoint.console.views import BadInput
from waypoint.error import DBOSException, WaypointStorageError

logger = logging.getLogger("waypoint.console")
HERE = Path(__file__).parent
BULK_ACTIONS = {
    "cancel": "Cancel",
    "resume": "Resume",
    "fork": "Fork from failure",
    "delete": "Delete",
}
MAX_BULK = 500
COUNTS_TTL_SEC = 1.0


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is attacker-controlled: IDs, names, outputs, errors
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=views.when, duration=views.duration, urlencode_query=urlencode)
    env.globals.update(
        statuses=observe.STATUSES, cap=observe.COUNT_CAP, count=views.count, terminal=views.TERMINAL
    )
    return env


def role(request: Request) -> str:
    """ "admin" or "read-only", as the mounting server decided (admin when it decides nothing)."""
    return str(request.scope.get("waypoint.role", "admin"))


def who(request: Request) -> str:
    user = request.scope.get("waypoint.user")
    client = request.client.host if request.client else "?"
    return f"{user or role(request)}@{client}"


class Console:
    """The pages over one ``Ops``."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.env = _environment()
        self._counts: tuple[float, dict[str, int]] = (0.0, {})
        self._counts_lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """The per-status counts, read at most once a second however many pages and polling
        tabs ask (they cost a few index scans each; tabs poll every two seconds)."""
        with self._counts_lock:
            read_at, counts = self._counts
            if time.monotonic() - read_at >= COUNTS_TTL_SEC:
                counts = self.ops.run(observe.status_counts(self.ops))
                self._counts = (time.monotonic(), counts)
            return counts

    # -- plumbing -------------------------------------------------------------------------------
    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        html = self.env.get_template(template).render(
            base=base,
            csrf=str(request.scope.get("waypoint.csrf", "")),
            can_act=role(request) == "admin",
            role=role(request),
            path=request.url.path,
            notice=self.notice(request),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    @staticmethod
    def notice(request: Request) -> str:
        """The outcome of the last action, carried by the redirect (a fixed vocabulary, so a
        crafted link cannot put words on the page)."""
        done = request.query_params.get("done", "")
        n = request.query_params.get("n", "")
        known = {
            "cancel": "Cancelled",
            "resume": "Resumed",
            "fork": "Forked",
            "delete": "Deleted",
            "pause": "Paused",
            "unpause": "Resumed",
            "trigger": "Triggered",
            "backfill": "Backfilled",
            "gc": "Garbage-collected",
            "recover": "Recovery started for",
        }
        if done not in known:
            return ""
        return f"{known[done]} {int(n) if views.whole(n) else ''}".strip() + (
            " workflow(s)." if views.whole(n) else "."
        )

    def error(self, request: Request, message: str, status: int = 400) -> Response:
        return self.page(request, "error.html", status=status, message=message)

    def redirect(self, request: Request, path: str, **query: Any) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        suffix = ("?" + urlencode(query)) if query else ""
        return RedirectResponse(f"{base}{path}{suffix}", status_code=303)

    def acting(self, request: Request) -> Optional[Response]:
        """None if this request may change things, else the refusal."""
        if role(request) != "admin":
            return self.error(request, "This session is read-only.", status=403)
        return None

    def log(self, request: Request, what: str, targets: Any) -> None:
        """Note an action (who, what, on what); the page after it recounts."""
        logger.info("console: %s %s %s", who(request), what, targets)
        self._counts = (0.0, {})

    # -- workflows ------------------------------------------------------------------------------
    def workflows(self, request: Request) -> Response:
        try:
            q = views.parse_list_query(request.query_params)
            rows = self.ops.run(
                observe.workflow_page(
                    self.ops,
                    after=q.after,
                    sort_desc=q.sort_desc,
                    limit=q.limit + 1,
                    **q.filters(),
                )
            )
        except (BadInput, DBOSException) as exc:
            return self.error(request, str(exc))
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        counts = self.counts()
        next_query = (
            q.params(after=(rows[-1].created_at or 0, rows[-1].workflow_id)) if more else ""
        )
        return self.page(
            request,
            "workflows.html",
            q=q,
            rows=rows,
            counts=counts,
            next_query=next_query,
            text_filters=views.TEXT_FILTERS,
            page_sizes=views.PAGE_SIZES,
            bulk_actions=BULK_ACTIONS,
        )

    async def bulk(self, request: Request) -> Response:
        form = await _form(request)
        action = str(form.get("action", ""))
        ids = [str(i) for i in form.getlist("id")]
        back = str(form.get("back", ""))
        if action not in BULK_ACTIONS:
            return self.error(request, f"unknown bulk action {action!r}")
        if not ids:
            return self.error(request, "select at least one workflow")
        if len(ids) > MAX_BULK:
            return self.error(request, f"select at most {MAX_BULK} workflows at once")
        if form.get("confirmed") != "yes":
            return self.page(
                request,
                "confirm.html",
                action=action,
                label=BULK_ACTIONS[action],
                ids=ids,
                back=back,
            )
        refused = self.acting(request)
        if refused is not None:
            return refused
        self.log(request, action, ids)
        n = await _threaded(lambda: self.run_bulk(action, ids))
        path, _, query = back.partition("?")
        if not path.startswith("/workflows"):
            path, query = "/workflows", ""
        base = str(request.scope.get("root_path", "")).rstrip("/")
        sep = "&" if query else ""
        return RedirectResponse(
            f"{base}{path}?{query}{sep}{urlencode({'done': action, 'n': n})}", status_code=303
        )

    def run_bulk(self, action: str, ids: list[str]) -> int:
        ops = self.ops
        if action == "cancel":
            return len(ops.run(workflows.cancel_workflows(ops, ids)))
        if action == "resume":
            return len(ops.run(workflows.resume_workflows(ops, ids)))
        if action == "delete":
            ops.run(workflows.delete_workflows(ops, ids))
            return len(ids)
        forked = 0
        for wfid in ids:
            steps = ops.run(observe.workflow_detail(ops, wfid))
            if steps is None:
                continue
            start = views.fork_from_failure(steps.steps)
            ops.run(workflows.fork_workflow(ops, wfid, start))
            forked += 1
        return forked

    def workflow(self, request: Request) -> Response:
        wfid = request.query_params.get("id", "")
        decode = request.query_params.get("decode") == "1" and role(request) == "admin"
        detail = self.ops.run(observe.workflow_detail(self.ops, wfid))
        if detail is None:
            return self.error(request, f"no workflow with ID {wfid!r}", status=404)
        row = detail.row
        ops = self.ops

        def show(text: Optional[str], ser: Optional[str]) -> observe.Shown:
            return observe.show_value(ops, text, ser, decode)

        children = {c.workflow_id: c for c in detail.children}
        now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        lineage: list[str] = []
        source = row.forked_from
        while source and len(lineage) < 20:  # the fork chain, nearest first
            lineage.append(source)
            found = ops.run(
                observe.workflow_page(
                    ops, after=None, sort_desc=True, limit=1, workflow_ids=[source]
                )
            )
            source = found[0].forked_from if found else None
        versions = ops.run(fleet_ops.list_application_versions(ops))
        steps = [
            (s, show(s.output, s.serialization), show(s.error, s.serialization))
            for s in detail.steps
        ]
        # Attempts are not stored (one row per step, as DBOS keeps it); a step whose retries
        # ran out says so in its error, and its bar spans every attempt.
        exhausted = {
            s.function_id
            for s, _, err in steps
            if "MaxStepRetriesExceeded" in err.type_name + err.text
        }
        return self.page(
            request,
            "workflow.html",
            row=row,
            detail=detail,
            inputs=show(row.inputs, row.serialization),
            output=show(row.output, row.serialization),
            error_value=show(row.error, row.serialization),
            bars=views.timeline(row, detail.steps, children, now, exhausted),
            steps=steps,
            events=[(k, show(v, ser)) for k, (v, ser) in sorted(detail.events.items())],
            history=[(h, show(h.value, h.serialization)) for h in detail.event_history],
            messages=[(m, show(m.message, m.serialization)) for m in detail.messages],
            streams=[(s, show(s.value, s.serialization)) for s in detail.streams],
            lineage=lineage,
            decode=decode,
            versions=[v["version_name"] for v in versions],
            attributes=row.attributes,
        )

    async def workflow_action(self, request: Request) -> Response:
        form = await _form(request)
        refused = self.acting(request)
        if refused is not None:
            return refused
        wfid = str(form.get("id", ""))
        action = str(form.get("action", ""))
        ops = self.ops
        if action not in ("cancel", "resume", "fork"):
            return self.error(request, f"unknown workflow action {action!r}")
        self.log(request, action, [wfid])
        try:
            if action == "cancel":
                await _threaded(lambda: ops.run(workflows.cancel_workflow(ops, wfid)))
                return self.redirect(request, "/workflow", id=wfid, done="cancel")
            if action == "resume":
                await _threaded(lambda: ops.run(workflows.resume_workflow(ops, wfid)))
                return self.redirect(request, "/workflow", id=wfid, done="resume")
            step_text = str(form.get("start_step", "")).strip()
            if not views.whole(step_text):
                return self.error(request, f"start_step must be a step number, got {step_text!r}")
            version = str(form.get("application_version", "")).strip() or None
            new_id = await _threaded(
                lambda: ops.run(
                    workflows.fork_workflow(ops, wfid, int(step_text), application_version=version)
                )
            )
        except DBOSException as exc:
            return self.error(request, str(exc))
        self.log(request, "forked as", [new_id])
        return self.redirect(request, "/workflow", id=new_id, done="fork")

    # -- live -----------------------------------------------------------------------------------
    def live(self, request: Request) -> Response:
        """Statuses of the workflows a page shows, and the per-status counts: what a page polls
        when no event stream is offered."""
        ids = request.query_params.getlist("id")[:MAX_BULK]
        rows = (
            self.ops.run(
                observe.workflow_page(
                    self.ops, after=None, sort_desc=True, limit=len(ids) or 1, workflow_ids=ids
                )
            )
            if ids
            else []
        )
        counts = self.counts()
        return JSONResponse(
            {
                "workflows": {r.workflow_id: r.status for r in rows},
                "counts": {s: views.count(n, observe.COUNT_CAP) for s, n in counts.items()},
            }
        )

    # -- queues, executors, schedules, retention ------------------------------------------------
    def queues(self, request: Request) -> Response:
        picture = self.ops.run(observe.queue_picture(self.ops))
        return self.page(request, "queues.html", p=picture, now=picture.gauges.db_now_ms)

    def executors(self, request: Request) -> Response:
        return self.page(request, "executors.html", f=self.ops.run(observe.fleet(self.ops)))

    async def recover(self, request: Request) -> Response:
        form = await _form(request)
        refused = self.acting(request)
        if refused is not None:
            return refused
        ids = [str(i) for i in form.getlist("executor_id") if i]
        if not ids:
            return self.error(request, "name the executor to recover")
        self.log(request, "recover executors", ids)
        try:
            recovered = await _threaded(
                lambda: self.ops.run(fleet_ops.recover_executors(self.ops, ids))
            )
        except DBOSException as exc:
            return self.error(request, str(exc))
        return self.redirect(request, "/executors", done="recover", n=len(recovered))

    def schedules(self, request: Request) -> Response:
        found = self.ops.run(observe.schedule_views(self.ops))
        return self.page(request, "schedules.html", schedules=found)

    async def schedule_action(self, request: Request) -> Response:
        form = await _form(request)
        refused = self.acting(request)
        if refused is not None:
            return refused
        name = str(form.get("name", ""))
        action = str(form.get("action", ""))
        ops = self.ops
        flows: dict[str, Callable[[], Any]] = {
            "pause": lambda: schedules.pause_schedule(ops, name),
            "unpause": lambda: schedules.resume_schedule(ops, name),
            "trigger": lambda: schedules.trigger_schedule(ops, name),
        }
        try:
            if action == "backfill":
                start = _datetime(form.get("start"), "start")
                end = _datetime(form.get("end"), "end")
                if end <= start:
                    raise BadInput("the backfill's end must be after its start")
                self.log(request, f"backfill {start.isoformat()}..{end.isoformat()}", [name])
                fired = await _threaded(
                    lambda: ops.run(schedules.backfill_schedule(ops, name, start, end))
                )
                return self.redirect(request, "/schedules", done="backfill", n=len(fired))
            if action not in flows:
                raise BadInput(f"unknown schedule action {action!r}")
            self.log(request, action, [name])
            await _threaded(lambda: ops.run(flows[action]()))
        except (BadInput, DBOSException) as exc:
            return self.error(request, str(exc))
        return self.redirect(request, "/schedules", done=action)

    def retention(self, request: Request) -> Response:
        return self.page(request, "retention.html", r=self.ops.run(observe.retention(self.ops)))

    async def gc(self, request: Request) -> Response:
        form = await _form(request)
        refused = self.acting(request)
        if refused is not None:
            return refused
        days = str(form.get("older_than_days", "")).strip()
        keep = str(form.get("keep_rows", "")).strip()
        if not days and not keep:
            return self.error(request, "give an age in days, a number of rows to keep, or both")
        for label, value in (("older_than_days", days), ("keep_rows", keep)):
            if value and not views.whole(value):
                return self.error(request, f"{label} must be a whole number, got {value!r}")
        if days and int(days) > MAX_DAYS:
            return self.error(request, f"older_than_days must be at most {MAX_DAYS}, got {days}")
        cutoff = None
        if days:
            now = dt.datetime.now(dt.timezone.utc).timestamp() * 1000
            cutoff = int(now - int(days) * 86_400_000)
        rows = int(keep) if keep else None
        if rows is not None and rows < 1:
            return self.error(request, "keep_rows must be at least 1")
        self.log(request, f"garbage-collect older_than_days={days!r} keep_rows={keep!r}", [])
        deleted = await _threaded(
            lambda: self.ops.run(
                fleet_ops.garbage_collect(
                    self.ops, cutoff_epoch_timestamp_ms=cutoff, rows_threshold=rows
                )
            )
        )
        return self.redirect(request, "/retention", done="gc", n=deleted)


def _datetime(value: Any, label: str) -> dt.datetime:
    text = str(value or "").strip()
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{label} must be a date and time (YYYY-MM-DDTHH:MM), got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


MAX_FORM_BYTES = 256 * 1024


async def _form(request: Request) -> ImmutableMultiDict[str, str]:
    """The URL-encoded form a page posted (the pages post no other kind; parsed here rather
    than through python-multipart, which Starlette needs for the general case)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadInput(f"the form is larger than {MAX_FORM_BYTES} bytes")
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def _threaded(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


MAX_DAYS = 1_000_000  # older_than_days: beyond this the cutoff leaves the epoch-ms range


def build_console(ops: Any = None) -> Starlette:
    """The console over ``ops`` (an ``Ops``, an engine, or None for the launched runtime), to
    mount at ``/console``. Authentication and CSRF are the mounting server's."""
    console = Console(as_ops(ops))

    def home(request: Request) -> Response:
        return console.redirect(request, "/workflows")

    routes = [
        Route("/", home),
        Route("/workflows", console.workflows),
        Route("/workflows/bulk", console.bulk, methods=["POST"]),
        Route("/workflow", console.workflow),
        Route("/workflow/action", console.workflow_action, methods=["POST"]),
        Route("/live", console.live),
        Route("/queues", console.queues),
        Route("/executors", console.executors),
        Route("/executors/recover", console.recover, methods=["POST"]),
        Route("/schedules", console.schedules),
        Route("/schedules/action", console.schedule_action, methods=["POST"]),
        Route("/retention", console.retention),
        Route("/retention/gc", console.gc, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        """What a page did not catch itself: bad input (a NUL or an unpaired surrogate in an
        ID, a value the library refuses) is the request's fault, named on a 400 page; a
        database that does not answer is a 503. Never a bare 500."""
        status = 503 if isinstance(exc, WaypointStorageError) else 400
        return console.error(request, str(exc), status=status)

    return Starlette(routes=routes, exception_handlers={BadInput: refused, DBOSException: refused})

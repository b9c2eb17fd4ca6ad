"""Starting, enqueueing, debouncing and running steps are typed with ``ParamSpec``: mypy
rejects a call whose arguments do not fit the workflow's or step's signature, and infers the
result type through handles. Checked by running mypy (strict) on two small user programs: one
where every line marked ``# wrong`` must be reported, and one that must pass untouched.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """\
from waypoint import DBOS, Debouncer, Queue

queue = Queue("q")


@DBOS.workflow()
def wf(a: int, b: str = "") -> int:
    return a


@DBOS.workflow()
async def awf(a: int) -> str:
    return str(a)


@DBOS.step()
def step(a: int) -> float:
    return a / 2


@DBOS.step()
async def astep(a: int) -> bytes:
    return b""
"""

WRONG = """
def sync_calls() -> None:
    DBOS.start_workflow(wf, "1")  # wrong
    DBOS.start_workflow(wf, 1, "b", 3)  # wrong
    DBOS.start_workflow(wf, 1, c=2)  # wrong
    DBOS.enqueue_workflow("q", wf, "1")  # wrong
    queue.enqueue(wf)  # wrong
    queue.enqueue(wf, 1, b=2)  # wrong
    DBOS.run_step(None, step, "1")  # wrong
    DBOS.run_step(None, step)  # wrong
    s: str = DBOS.start_workflow(wf, 1).get_result()  # wrong
    f: str = DBOS.run_step(None, step, 1)  # wrong
    Debouncer.create(wf).debounce("key", 1.0, "1")  # wrong


async def async_calls() -> None:
    await DBOS.start_workflow_async(awf, "1")  # wrong
    await DBOS.start_workflow_async(wf, 1, 2, 3)  # wrong
    await DBOS.enqueue_workflow_async("q", awf)  # wrong
    await queue.enqueue_async(awf, a="1")  # wrong
    await DBOS.run_step_async(None, astep, "1")  # wrong
    await DBOS.run_step_async(None, step, x=1)  # wrong
    handle = await DBOS.start_workflow_async(awf, 1)
    n: int = await handle.get_result()  # wrong
    b: str = await DBOS.run_step_async(None, astep, 1)  # wrong
    await Debouncer.create(awf).debounce_async("key", 1.0, a="1")  # wrong
"""

RIGHT = """
def sync_calls() -> None:
    n: int = DBOS.start_workflow(wf, 1, b="x").get_result()
    m: int = DBOS.enqueue_workflow("q", wf, 1, "x").get_result()
    k: int = queue.enqueue(wf, a=1).get_result()
    f: float = DBOS.run_step(None, step, 1)
    g: float = DBOS.run_step({"name": "half"}, step, a=1)
    d: int = Debouncer.create(wf).debounce("key", 1.0, 1, b="x").get_result()


async def async_calls() -> None:
    s: str = await (await DBOS.start_workflow_async(awf, 1)).get_result()
    n: int = await (await DBOS.start_workflow_async(wf, 1)).get_result()
    t: str = await (await DBOS.enqueue_workflow_async("q", awf, a=1)).get_result()
    u: str = await (await queue.enqueue_async(awf, 1)).get_result()
    b: bytes = await DBOS.run_step_async(None, astep, 1)
    f: float = await DBOS.run_step_async(None, step, 1)
    d: str = await (await Debouncer.create(awf).debounce_async("key", 1.0, 1)).get_result()
"""


def _mypy_errors(tmp_path: Path) -> dict[str, set[int]]:
    """Run mypy once on both programs; the line numbers it reports, per file."""
    files = {}
    for name, body in (("wrong", WRONG), ("right", RIGHT)):
        path = tmp_path / f"{name}_usage.py"
        path.write_text(PRELUDE + textwrap.dedent(body))
        files[name] = path
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes"]
        + [str(p) for p in files.values()],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    found: dict[str, set[int]] = {name: set() for name in files}
    for line in proc.stdout.splitlines():
        m = re.match(r"(.+?):(\d+): (error|note):", line)
        assert m, f"unexpected mypy output: {line}"
        if m.group(3) == "note":
            continue
        name = Path(m.group(1)).stem.removesuffix("_usage")
        found[name].add(int(m.group(2)))
    return found


def test_mypy_rejects_wrong_arguments_and_accepts_right_ones(tmp_path: Path) -> None:
    found = _mypy_errors(tmp_path)
    program = (PRELUDE + textwrap.dedent(WRONG)).splitlines()
    marked = {n for n, line in enumerate(program, start=1) if line.endswith("# wrong")}
    assert len(marked) == 20
    assert found["wrong"] == marked, "\n".join(
        f"{n}: {program[n - 1].strip()}" for n in sorted(found["wrong"] ^ marked)
    )
    assert found["right"] == set()

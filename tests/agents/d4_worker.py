"""D4 helper process: the run engine in-process with a side-effecting tool registered here.

``python d4_worker.py <data_dir> start``  creates a run whose model calls ``transfer`` and runs it;
``transfer`` appends to ``ledger.txt`` and then hangs, so the test can SIGKILL the process
between the side effect and the recording of its result.
``python d4_worker.py <data_dir> resume <run_id>`` executes the run again and prints its status.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rixin.agents.engine import RunEngine
from rixin.agents.items import normalize_input
from rixin.agents.steps import StepRequest, StepResult
from rixin.agents.tools import (
    BaseTool,
    BuildContext,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolOutput,
    ToolRegistry,
)
from rixin.settings import AgentSettings
from rixin.store.db import Database
from rixin.store.records import ProjectRecord
from rixin.store.records_agents import AgentRunRecord


@dataclass
class Transfer(BaseTool):
    ledger: Path = Path("ledger.txt")
    side_effects: bool = True

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        with self.ledger.open("a") as f:
            f.write(f"{ctx.idempotency_key}\n")
        await asyncio.sleep(60)  # the test kills us here
        return ToolOutput("transferred")


class Script:
    async def __call__(self, req: StepRequest, on_text: Any) -> StepResult:
        if any(m.get("role") == "tool" for m in req.messages):
            return StepResult("Done.", [], "stop")
        call = ToolCall("call_1", "transfer", json.dumps({"amount": 10}))
        return StepResult("", [call], "tool_calls")


async def main(data_dir: Path, mode: str, run_id: str | None) -> None:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'd4.db'}")
    await db.connect()
    await db.migrate()
    registry = ToolRegistry()

    async def build(spec: dict[str, Any], ctx: BuildContext) -> ToolBundle:
        return ToolBundle(
            [Transfer(name="transfer", type="transfer", ledger=data_dir / "ledger.txt")]
        )

    registry.register("transfer", build)
    settings = AgentSettings(run_lease_s=1.0)
    engine = RunEngine(db, Script(), registry, settings, lambda p, r: BuildContext(p, r, settings))
    if mode == "start":
        async with db.session() as session:
            session.add(ProjectRecord(id="proj_d4", name="d4"))
            await session.flush()
            run = await engine.create_run(
                session,
                project_id="proj_d4",
                surface="test",
                model="m",
                params={"tools": [{"type": "transfer"}]},
                inputs=normalize_input("pay 10"),
            )
        print(run.id, flush=True)
        await engine.execute(run.id)
    else:
        assert run_id is not None
        await asyncio.sleep(settings.run_lease_s)
        await engine.execute(run_id)
        async with db.session(readonly=True) as session:
            record = await session.get(AgentRunRecord, run_id)
            assert record is not None
            print(json.dumps({"status": record.status, "error": record.error}), flush=True)
    await db.aclose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))

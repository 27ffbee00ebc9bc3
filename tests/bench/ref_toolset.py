"""Times the reference toolset (`anthropic.lib.tools.agent_toolset`, the Python SDK's
`agent_toolset_20260401`) on a plan written by `cargo run --release -p hands-tools --example
toolbench`, so both implementations run the same calls on the same tree in the same run.

Usage: python ref_toolset.py PLAN.json  -> prints {"label": [nanoseconds per call, ...], ...}

The plan is {"workdir": str, "tools": [{"name": str, "label": str, "inputs": [dict, ...], "iterations": int}]}
(a missing label is the tool's name);
inputs are cycled, after one untimed call with the first. Errors raised as ToolError count as calls (the reference reports them as
results), anything else aborts the run.
"""

import sys
import json
import time
import asyncio

from anthropic.lib.tools._beta_functions import ToolError, aclose_runnable_tool
from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401


async def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    ctx = AgentToolContext(workdir=plan["workdir"])
    tools = {t.name: t for t in beta_agent_toolset_20260401(ctx)}
    out: dict[str, list[int]] = {}
    try:
        for step in plan["tools"]:
            tool = tools[step["name"]]
            inputs = step["inputs"]
            samples = []
            # One untimed call first, as the Rust side does (shell start, page cache).
            await tool.call(inputs[0])
            for i in range(1, step["iterations"] + 1):
                started = time.perf_counter_ns()
                try:
                    await tool.call(inputs[i % len(inputs)])
                except ToolError:
                    pass
                samples.append(time.perf_counter_ns() - started)
            out[step.get("label", step["name"])] = samples
    finally:
        for tool in tools.values():
            await aclose_runnable_tool(tool)
        await ctx.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

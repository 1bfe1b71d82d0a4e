"""asyncio-only code (redis.asyncio) called from inside session updates of a Trio
program, through triact.aio's trio-asyncio bridge.

Run by test_bridge.py in a process of its own: importing trio-asyncio changes
asyncio for the whole process. Prints one JSON object with what it saw.

    python tests/aio/_redis_scenario.py HOST PORT KEY_PREFIX
"""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs
import redis.asyncio
import trio

import triact
import triact.aio

SESSIONS = 4
CLIENTS = 16
UPDATES_PER_CLIENT = 5


async def main(host: str, port: int, prefix: str) -> dict[str, Any]:
    async with triact.aio.open_asyncio_bridge():
        client = redis.asyncio.Redis(host=host, port=port)
        try:
            async with triact.open_session_manager() as manager:
                return await scenario(manager, client, prefix)
        finally:
            await triact.aio.run_asyncio(client.aclose)


async def scenario(
    manager: triact.SessionManager, client: redis.asyncio.Redis, prefix: str
) -> dict[str, Any]:
    sessions = [await manager.create_session() for _ in range(SESSIONS)]
    keys = [f"{prefix}:{session.id}" for session in sessions]

    async def count_in_redis(state: triact.SessionState) -> triact.SessionState:
        # A Trio coroutine inside the actor, awaiting an asyncio-only client.
        seen = await triact.aio.run_asyncio(client.incr, f"{prefix}:{state.id}")
        n = state.data.get("n", 0) + 1
        return attrs.evolve(state, data={**state.data, "n": n, "redis": seen})

    async def use(i: int) -> None:
        for _ in range(UPDATES_PER_CLIENT):
            await sessions[i % SESSIONS].update(count_in_redis)

    async with trio.open_nursery() as nursery:
        for i in range(CLIENTS):
            nursery.start_soon(use, i)
    states = [await session.snapshot() for session in sessions]

    async def pop_forever(state: triact.SessionState) -> triact.SessionState:
        await triact.aio.run_asyncio(client.blpop, [f"{prefix}:empty"], 0)
        return attrs.evolve(state, data={**state.data, "popped": True})

    with trio.move_on_after(0.2) as waited:  # BLPOP with no timeout never returns
        await sessions[0].update(pop_forever)
    after_cancel = await sessions[0].snapshot()
    in_redis = [int(await triact.aio.run_asyncio(client.get, key)) for key in keys]
    await triact.aio.run_asyncio(client.delete, *keys)
    return {
        "counts": [state.data["n"] for state in states],
        "last_seen": [state.data["redis"] for state in states],
        "versions": [state.version for state in states],
        "in_redis": in_redis,
        "cancelled": waited.cancelled_caught,
        "changed_after_cancel": after_cancel.version != states[0].version,
        "still_serves": (await sessions[0].update(count_in_redis)).data["n"],
    }


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])))

"""The ceiling: a bare FastAPI JSON endpoint on the same server stack as nextbest.

It parses the same request bodies (decisions and feedback) and returns responses of
similar size, doing no work in between, so nextbest's cost over it is the decision itself.

`BARE_SPIN_US=N` adds N microseconds of busy CPU to every request (thread CPU time, not
wall time): `nextbest bench --breakdown` uses it to measure how p99 grows with the CPU a
request costs, on the same machine in the same run.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()

SPIN_SECONDS = float(os.environ.get("BARE_SPIN_US", "0")) / 1e6


def spin() -> None:
    """Burn SPIN_SECONDS of this thread's CPU time."""
    if SPIN_SECONDS > 0:
        end = time.thread_time() + SPIN_SECONDS
        while time.thread_time() < end:
            pass


_BODY = (
    b'{"decision_id":"00000000000000000000000000000000","customer_id":null,"channel":"web",'
    b'"placement":"home","actions":[{"action_id":"p001","rank":1,"score":1.0,"propensity":0.1,'
    b'"probability":1.0,"value":1.0,"explored":false}],"model_versions":{},"degraded":[]}'
)


@app.post("/v1/decisions")
async def decide(request: Request) -> Response:
    await request.json()
    spin()
    return Response(_BODY, media_type="application/json")


@app.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    await request.json()
    spin()
    return Response(b'{"accepted":1,"rejected":[]}', status_code=202, media_type="application/json")


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}

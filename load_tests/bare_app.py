"""The ceiling: a bare FastAPI JSON endpoint on the same server stack as nextbest.

It parses the same request bodies (decisions and feedback) and returns responses of
similar size, doing no work in between, so nextbest's cost over it is the decision itself.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()

_BODY = (
    b'{"decision_id":"00000000000000000000000000000000","customer_id":null,"channel":"web",'
    b'"placement":"home","actions":[{"action_id":"p001","rank":1,"score":1.0,"propensity":0.1,'
    b'"probability":1.0,"value":1.0,"explored":false}],"model_versions":{},"degraded":[]}'
)


@app.post("/v1/decisions")
async def decide(request: Request) -> Response:
    await request.json()
    return Response(_BODY, media_type="application/json")


@app.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    await request.json()
    return Response(b'{"accepted":1,"rejected":[]}', status_code=202, media_type="application/json")


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}

"""`remote`: a reward model served over HTTP (config: `rm_type: remote`, `rm_url`; Miles' `remote_rm`).

Protocol: POST `rm_url` with JSON {"prompt", "response", "label", "metadata"}; the reply is
{"reward": <number>} or a bare number. Each attempt is bounded by `timeout_s`. Connection errors,
timeouts, HTTP 429 and 5xx are retried `max_retries` times, waiting `retry_backoff_s` and doubling
(capped at 30 s); other 4xx and malformed replies fail at once, since resending the same request
cannot fix them. When every attempt fails, `RewardServiceError` names the URL and the last failure.

One aiohttp session per call (a fresh connection per sample): a shared session would outlive the event
loop that `score_samples` runs in and leak; `score_samples` bounds how many calls run at once.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from rlpipe.config.secrets import redact_text, redact_url
from rlpipe.data.sample import Sample
from rlpipe.reward.context import RewardContext

if TYPE_CHECKING:
    import aiohttp

_MAX_BACKOFF_S = 30.0  # a longer wait would stall the whole rollout on one sample
_BODY_PREVIEW_CHARS = 200


class RewardServiceError(RuntimeError):
    """The remote reward service could not produce a reward (down, erroring, or speaking another protocol)."""


class _Retryable(Exception):
    """A failed attempt worth repeating (server busy or unreachable)."""


def parse_reward_reply(body: Any, url: str) -> float:
    """The reward in a service reply: {"reward": x} or a bare x, a finite number (not a bool)."""
    value = body.get("reward") if isinstance(body, dict) else body
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RewardServiceError(
            f"reward service {redact_url(url)} replied {json.dumps(body)[:_BODY_PREVIEW_CHARS]}; "
            'expected {"reward": <finite number>} or a bare number'
        )
    return float(value)


async def _post_once(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> float:
    """One request; raises _Retryable for failures a retry may cure, RewardServiceError for the rest."""
    import aiohttp  # lazy: keeps `import rlpipe.reward` light for the config layer

    try:
        async with session.post(url, json=payload) as resp:
            text = await resp.text()
            if resp.status == 429 or resp.status >= 500:
                raise _Retryable(f"HTTP {resp.status}: {text[:_BODY_PREVIEW_CHARS]!r}")
            if resp.status >= 400:
                raise RewardServiceError(
                    f"reward service {redact_url(url)} rejected the request: HTTP {resp.status}: {redact_text(text)!r}"
                )
    except (aiohttp.ClientError, TimeoutError) as err:
        detail = redact_text(str(err)) or "no reply within the timeout"  # aiohttp's errors may spell the URL
        raise _Retryable(f"{type(err).__name__}: {detail}") from err
    try:
        body = json.loads(text)
    except ValueError as err:
        raise RewardServiceError(
            f"reward service {redact_url(url)} replied non-JSON {text[:_BODY_PREVIEW_CHARS]!r}"
        ) from err
    return parse_reward_reply(body, url)


async def remote_reward(sample: Sample, ctx: RewardContext) -> float:
    """Registry entry `remote`: ask the service at `ctx.rm_url`, with retries; see the module docstring."""
    import aiohttp

    if not ctx.rm_url:
        raise RewardServiceError("rm_type 'remote' needs rm_url")
    payload = {
        "prompt": sample.prompt,
        "response": sample.response_text,
        "label": sample.label,
        "metadata": sample.metadata,
    }
    attempts = ctx.max_retries + 1
    last_failure = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ctx.timeout_s)) as session:
        for attempt in range(attempts):
            if attempt > 0:
                await asyncio.sleep(min(ctx.retry_backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))
            try:
                return await _post_once(session, ctx.rm_url, payload)
            except _Retryable as err:
                last_failure = str(err)
    raise RewardServiceError(
        f"reward service {redact_url(ctx.rm_url)} failed {attempts} time(s) (timeout {ctx.timeout_s} s each); "
        f"last failure: {last_failure}. Is the service up and reachable from this node?"
    )

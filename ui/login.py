"""The page's login check, slowed after repeated failures.

Gradio calls ``auth(username, password)`` on every POST /login. :func:`guarded_login`
builds that function for the one ``TUNELAB_AUTH`` user: the comparison takes constant time,
the first ``free_tries`` failures in :data:`WINDOW_S` are answered at once, and from
then on every attempt (right or wrong) waits 1, 2, 4 ... :data:`MAX_DELAY_S` seconds first,
one attempt at a time, so guesses sent in parallel queue behind each other instead of
multiplying the rate. A successful login clears the count. Each call of
:func:`guarded_login` has its own count (built per launch, never shared at module level).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from typing import Awaitable, Callable

WINDOW_S = 15 * 60  # failures older than this no longer slow anyone
MAX_DELAY_S = 30.0

log = logging.getLogger("tunelab.login")


def delay_after(failures: int, free_tries: int) -> float:
    """Seconds an attempt waits when ``failures`` recent failures came before it."""
    if failures < free_tries:
        return 0.0
    return min(2.0 ** (failures - free_tries), MAX_DELAY_S)


def guarded_login(user: str, password: str, *, free_tries: int = 3,
                  clock: Callable[[], float] = time.monotonic) -> Callable[[str, str], Awaitable[bool]]:
    """An async ``auth`` function for ``Blocks.launch`` (a plain coroutine function: Gradio
    awaits only those) that accepts ``user``/``password`` and slows repeated failures."""
    failures: deque[float] = deque()
    one_at_a_time = asyncio.Lock()
    expected = (user.encode(), password.encode())

    async def check(username: str, given: str) -> bool:
        async with one_at_a_time:
            now = clock()
            while failures and now - failures[0] > WINDOW_S:
                failures.popleft()
            wait = delay_after(len(failures), free_tries)
            if wait:
                await asyncio.sleep(wait)
            right_user = hmac.compare_digest(username.encode(), expected[0])
            right = hmac.compare_digest(given.encode(), expected[1]) and right_user
            if right:
                failures.clear()
            else:
                failures.append(clock())
                log.warning("failed page login for %r (%d in the last %d min)", username[:40], len(failures),
                            WINDOW_S // 60)
            return right

    return check

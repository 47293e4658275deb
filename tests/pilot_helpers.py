"""What the Pilot tests share: waiting for a worker's result to reach the screen."""

from __future__ import annotations


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the app")

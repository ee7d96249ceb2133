import asyncio

from distillery_assets.llm.limits import RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def take(limiter, clock, tokens=0):
    """One ticket, as the client takes it on its event loop (waiting on the fake clock)."""
    return asyncio.run(limiter.acquire(tokens, clock.sleep))


def test_rpm_makes_the_next_request_wait_for_the_window():
    clock = FakeClock()
    limiter = RateLimiter(rpm=2, clock=clock)
    take(limiter, clock)
    clock.now += 10
    take(limiter, clock)
    assert clock.sleeps == []
    take(limiter, clock)  # the first ticket leaves the window 60 s after it was taken
    assert clock.now == 1060.0
    assert sum(clock.sleeps) == 50.0


def test_tpm_counts_settled_tokens_and_lets_an_oversized_request_through_alone():
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, clock=clock)
    t = take(limiter, clock, 900)
    limiter.settle(t, 300)  # real usage was smaller than the estimate
    take(limiter, clock, 600)
    assert clock.sleeps == []
    take(limiter, clock, 500)  # 300 + 600 + 500 > 1000: wait until the first two leave
    assert clock.now >= 1060.0
    waited = sum(clock.sleeps)
    clock.now += 120
    take(limiter, clock, 5000)  # bigger than the whole budget, window empty: allowed
    assert sum(clock.sleeps) == waited  # ... at once


def test_no_limits_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(1000):
        assert take(limiter, clock, 10**6) is None
    assert clock.sleeps == []

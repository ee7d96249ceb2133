from distillery_assets.llm.limits import RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_rpm_makes_the_next_request_wait_for_the_window():
    clock = FakeClock()
    limiter = RateLimiter(rpm=2, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 10
    limiter.acquire()
    assert clock.sleeps == []
    limiter.acquire()  # the first ticket leaves the window 60 s after it was taken
    assert clock.now == 1060.0
    assert sum(clock.sleeps) == 50.0


def test_tpm_counts_settled_tokens_and_lets_an_oversized_request_through_alone():
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, clock=clock, sleep=clock.sleep)
    t = limiter.acquire(900)
    limiter.settle(t, 300)  # real usage was smaller than the estimate
    limiter.acquire(600)
    assert clock.sleeps == []
    limiter.acquire(500)  # 300 + 600 + 500 > 1000: wait until the first two leave
    assert clock.now >= 1060.0
    clock.now += 120
    limiter.acquire(5000)  # bigger than the whole budget, window empty: allowed
    assert limiter.waited_s == sum(clock.sleeps)


def test_no_limits_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        assert limiter.acquire(10**6) is None
    assert clock.sleeps == []

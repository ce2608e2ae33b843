from app.breaker import CircuitBreaker, CircuitOpen


def test_opens_after_fail_max_and_half_opens_after_reset_timeout():
    now = [0.0]
    breaker = CircuitBreaker("t", fail_max=2, reset_timeout=30, clock=lambda: now[0])

    def boom():
        raise OSError("down")

    for _ in range(2):
        try:
            breaker.call(boom)
        except OSError:
            pass
    assert breaker.state == CircuitBreaker.OPEN
    try:
        breaker.call(lambda: 1)
        raise AssertionError("an open breaker must refuse")
    except CircuitOpen:
        pass
    now[0] = 31
    assert breaker.call(lambda: 1) == 1 and breaker.state == CircuitBreaker.CLOSED

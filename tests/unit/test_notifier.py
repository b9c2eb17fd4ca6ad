"""The PostgreSQL store's deferred wake-ups: sent after the write, batched, never lost to a
failed send, flushed on stop."""

from __future__ import annotations

import threading

from waypoint.storage.postgres.notifier import Notifier


def test_keys_are_batched_deduplicated_and_flushed_on_stop() -> None:
    sent: list[list[str]] = []
    release = threading.Event()
    first = threading.Event()

    def send(keys: list[str]) -> None:
        sent.append(keys)
        first.set()
        assert release.wait(30)

    notifier = Notifier(send)
    notifier.post("q:a")
    assert first.wait(30)  # the first send is under way: the next keys gather meanwhile
    notifier.post("q:b", "d:w1")
    notifier.post("q:b")
    release.set()
    notifier.stop()
    assert sent == [["q:a"], ["q:b", "d:w1"]]
    notifier.post("q:late")  # after stop: ignored, no thread is started again
    assert sent == [["q:a"], ["q:b", "d:w1"]]


def test_a_failed_send_does_not_stop_later_ones() -> None:
    sent: list[list[str]] = []
    failed, done = threading.Event(), threading.Event()

    def send(keys: list[str]) -> None:
        if keys == ["q:bad"]:
            failed.set()
            raise OSError("connection lost")
        sent.append(keys)
        done.set()

    notifier = Notifier(send)
    notifier.post("q:bad")
    assert failed.wait(30)
    notifier.post("q:good")
    assert done.wait(30)
    notifier.stop()
    assert ["q:good"] in sent


def test_keys_posted_soon_after_a_send_go_out_together() -> None:
    sent: list[list[str]] = []
    paused, resume, second = threading.Event(), threading.Event(), threading.Event()

    def send(keys: list[str]) -> None:
        sent.append(keys)
        if len(sent) == 2:
            second.set()

    def pause(seconds: float) -> None:
        assert seconds > 0
        paused.set()
        assert resume.wait(30)

    notifier = Notifier(send, pause=pause)
    notifier.post("q:a")  # nothing was sent lately: at once
    assert paused.wait(30)  # sent, and now pausing: the next keys gather
    for key in ("d:w1", "d:w2", "q:a"):
        notifier.post(key)
    resume.set()
    assert second.wait(30)
    notifier.stop()
    assert sent == [["q:a"], ["d:w1", "d:w2", "q:a"]]

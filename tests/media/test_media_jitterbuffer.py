import numpy as np
import pytest

from ivr.media.jitterbuffer import JitterBuffer

F = 0.02


def frame(k: int) -> np.ndarray:
    """A 160-sample frame whose value identifies it."""
    return np.full(160, k, dtype=np.int16)


def due(jb: JitterBuffer, now: float) -> list:
    out = []
    while (f := jb.pop(now)) is not None:
        out.append(f)
    return out


def run(jb: JitterBuffer, arrivals: list[tuple[float, int, int, int]], until: float, timed: bool = False) -> list:
    """Push (time, seq, ts, ssrc) packets at their times, taking the due frames after each packet and
    on a 20 ms clock (as the RTP session does); returns the frames, or (time taken, frame) pairs."""
    out = []
    arrivals = sorted(arrivals, key=lambda a: a[0])
    t, i = 0.0, 0
    while t <= until:
        while i < len(arrivals) and arrivals[i][0] <= t:
            at, seq, ts, ssrc = arrivals[i]
            jb.push(seq, ts, ssrc, frame(seq % 30000), at)
            out += [(at, f) for f in due(jb, at)]
            i += 1
        out += [(t, f) for f in due(jb, t)]
        t = round(t + F, 6)
    return out if timed else [f for _, f in out]


def audio_ids(frames: list) -> list[int]:
    return [int(f.pcm[0]) for f in frames if f.kind == "audio"]


def test_in_order_stream_is_released_as_it_arrives() -> None:
    jb = JitterBuffer()
    arr = [(i * F + 0.003, 100 + i, i * 160, 1) for i in range(50)]
    timed = run(jb, arr, until=1.2, timed=True)
    audio = [(t, f) for t, f in timed if f.kind == "audio"]
    assert [int(f.pcm[0]) for _, f in audio] == list(range(100, 150))
    # no playout delay: each frame leaves when its packet comes, and says when that was
    assert [t for t, _ in audio] == [a for a, *_ in arr] == [f.arrival for _, f in audio]
    assert jb.stats.lost == jb.stats.late == jb.stats.duplicate == 0
    assert all(f.kind == "audio" for _, f in timed[:50])  # silence only once the stream has stopped


def test_reordered_packets_come_out_in_order() -> None:
    arr = [(i * F, i, i * 160, 7) for i in range(40)]
    # swap pairs: each odd packet arrives 25 ms late, after its successor
    arr = [(t + (0.025 if s % 2 else 0), s, ts, ss) for t, s, ts, ss in arr]
    jb = JitterBuffer()
    timed = run(jb, arr, until=1.0, timed=True)
    assert audio_ids([f for _, f in timed]) == list(range(40))
    assert jb.stats.lost == 0 and all(f.kind == "audio" for _, f in timed[:40])
    # an even packet waits for its odd predecessor only, and leaves with it
    odd_arrivals = {s: t for t, s, *_ in arr if s % 2}
    assert all(t == odd_arrivals[int(f.pcm[0]) + 1] for t, f in timed if f.kind == "audio" and 0 < f.pcm[0] % 2 == 0)


def test_a_missing_frame_is_waited_for_only_up_to_the_target_delay() -> None:
    arr = [(i * F, i, i * 160, 7) for i in range(20) if i != 5]
    jb = JitterBuffer()
    timed = run(jb, arr, until=0.6, timed=True)
    concealed = [t for t, f in timed if f.kind == "concealed"]
    # frame 5 was due at 0.1 s: concealed once overdue by the target delay, then 6.. follow at once
    assert concealed[0] == pytest.approx(0.1 + jb.min_delay) and concealed[1] > 0.4  # then the stream's end
    after = [(t, int(f.pcm[0])) for t, f in timed if f.kind == "audio" and f.pcm[0] > 5]
    assert after[0] == (pytest.approx(0.1 + jb.min_delay), 6)
    assert jb.stats.lost == 1 and audio_ids([f for _, f in timed]) == [i for i in range(20) if i != 5]


def test_duplicates_and_late_packets_are_dropped_and_counted() -> None:
    jb = JitterBuffer()
    arr = [(i * F, i, i * 160, 7) for i in range(30)]
    arr += [(0.3, 3, 480, 7), (0.31, 20, 20 * 160, 7)]  # 3 already played; 20 buffered: duplicates
    arr = [a for a in arr if a[1] != 10] + [(0.5, 10, 1600, 7)]  # 10 arrives 300 ms late
    ids = audio_ids(run(jb, arr, until=1.0))
    assert ids == [i for i in range(30) if i != 10]
    assert jb.stats.duplicate == 2
    assert jb.stats.late == 1
    assert jb.stats.lost == 1


def test_loss_is_concealed_by_a_bounded_fading_repeat_then_silence() -> None:
    jb = JitterBuffer(max_conceal=2)
    arr = [(i * F, i, i * 160, 7) for i in range(30) if not 10 <= i < 15]
    frames = run(jb, arr, until=0.8)
    kinds = [f.kind for f in frames]
    first = kinds.index("concealed")
    assert kinds[first : first + 5] == ["concealed", "concealed", "silence", "silence", "silence"]
    assert frames[first].pcm[0] == 9 // 2 and frames[first + 1].pcm[0] == 9 // 4  # repeat of frame 9, fading
    assert audio_ids(frames) == [i for i in range(30) if not 10 <= i < 15]
    assert jb.stats.lost == 5


def test_sequence_and_timestamp_wraparound() -> None:
    arr = [(i * F, (65530 + i) & 0xFFFF, (0xFFFFFD00 + i * 160) & 0xFFFFFFFF, 9) for i in range(20)]
    arr[8], arr[9] = (arr[9][0], *arr[8][1:]), (arr[8][0], *arr[9][1:])  # reordered across the wrap
    jb = JitterBuffer()
    assert audio_ids(run(jb, arr, until=0.8)) == [((65530 + i) & 0xFFFF) % 30000 for i in range(20)]
    assert jb.stats.lost == jb.stats.late == jb.stats.resync == 0


def test_ssrc_change_mid_stream_resyncs_onto_the_new_stream() -> None:
    jb = JitterBuffer()
    old = [(i * F, 1000 + i, 5000 + i * 160, 0xAAAA) for i in range(20)]
    new = [(0.4 + i * F, 7 + i, 99999 + i * 160, 0xBBBB) for i in range(20)]
    frames = run(jb, old + new, until=1.2)
    # the old stream's buffered tail plays out before the new stream: nothing lost in the switch
    assert audio_ids(frames) == list(range(1000, 1020)) + list(range(7, 27))
    assert jb.stats.ssrc_change == 1 and jb.ssrc == 0xBBBB


def test_timestamp_jump_with_contiguous_sequence_is_followed_not_concealed() -> None:
    arr = [(i * F, i, i * 160 + (80000 if i >= 10 else 0), 3) for i in range(20)]
    jb = JitterBuffer()
    frames = run(jb, arr, until=0.8)
    assert audio_ids(frames) == list(range(20))
    assert "concealed" not in [f.kind for f in frames[:20]]
    assert jb.stats.resync == 1


def test_sender_restart_with_a_huge_sequence_jump_resyncs() -> None:
    arr = [(i * F, i, i * 160, 3) for i in range(10)] + [(0.2 + i * F, 40000 + i, i * 160, 3) for i in range(10)]
    jb = JitterBuffer()
    ids = audio_ids(run(jb, arr, until=0.8))
    # the first packet of the new run is held on probation (dropped); the second proves the restart
    assert ids == list(range(10)) + [(40000 + i) % 30000 for i in range(1, 10)]
    assert jb.stats.resync == 1 and jb.stats.late == 1


def test_a_single_very_late_stray_does_not_reset_the_stream() -> None:
    arr = [(i * F, i, i * 160, 3) for i in range(200)] + [(2.01, 5, 800, 3)]
    jb = JitterBuffer()
    assert audio_ids(run(jb, arr, until=4.2)) == list(range(200))
    assert jb.stats.late == 1 and jb.stats.resync == 0


def test_depth_is_bounded_while_waiting_for_a_missing_frame() -> None:
    jb = JitterBuffer(max_delay=0.1)
    for i in range(1, 31):  # 600 ms of audio arriving at once behind a missing first frame
        jb.push(i, i * 160, 5, frame(i), 0.0)
        if i == 1:
            assert [int(f.pcm[0]) for f in due(jb, 0.0)] == [1]
            jb.push(3, 480, 5, frame(3), 0.0)  # 2 is missing: what follows waits for it
    assert jb.depth <= 0.1
    assert jb.stats.overflow == 24
    assert audio_ids(due(jb, 0.0)) == list(range(26, 31))


def test_non_audio_packets_of_the_stream_play_as_silence_not_loss() -> None:
    jb = JitterBuffer()
    t = 0.0
    out = []
    for i in range(20):
        if 5 <= i < 9:
            jb.push_placeholder(i, 800, 5, t)  # telephone-event packets: their own timestamp
        else:
            jb.push(i, i * 160, 5, frame(i), t)
        jb.push_placeholder(500 + i, 0, 0xFFFF, t)  # another SSRC's events: ignored
        out += due(jb, t)
        t += F
    assert audio_ids(out) == [i for i in range(20) if not 5 <= i < 9]
    assert [f.kind for f in out] == ["audio"] * 5 + ["silence"] * 4 + ["audio"] * 11
    assert jb.stats.lost == 0 and jb.stats.foreign == 20


def test_target_delay_adapts_to_jitter_within_bounds() -> None:
    steady = JitterBuffer()
    run(steady, [(i * F, i, i * 160, 1) for i in range(100)], until=2.2)
    assert steady.target_delay == steady.min_delay
    rng = np.random.default_rng(3)
    jittery = JitterBuffer()
    run(jittery, [(i * F + rng.uniform(0, 0.08), i, i * 160, 1) for i in range(100)], until=2.4)
    assert jittery.min_delay < jittery.target_delay <= jittery.max_delay
    assert jittery.jitter > 0.01


def test_stream_that_stops_keeps_producing_silence() -> None:
    jb = JitterBuffer()
    frames = run(jb, [(i * F, i, i * 160, 1) for i in range(5)], until=1.0)
    assert audio_ids(frames) == list(range(5))
    assert [f.kind for f in frames][-10:] == ["silence"] * 10
    # one frame per frame time once the next one is overdue (the last packet came at 0.085 s, the next
    # was due at 0.105 s; off the clock's beat, so that no float rounding decides)
    arr = [(0.005 + i * F, i, i * 160, 1) for i in range(5)]
    filled = [t for t, f in run(JitterBuffer(), arr, 1.0, True)][5:]
    assert 0.105 + jb.min_delay <= filled[0] <= 0.105 + jb.min_delay + F
    assert np.allclose(np.diff(filled), F)
    assert jb.stats.underrun == 1


def test_a_stream_that_resumes_in_sequence_plays_at_once() -> None:
    # silence suppression: the sender stops for 300 ms, then goes on with the next sequence number
    arr = [(i * F, i, i * 160, 1) for i in range(5)] + [(0.4 + i * F, 5 + i, (25 + i) * 160, 1) for i in range(5)]
    jb = JitterBuffer()
    timed = run(jb, arr, until=0.6, timed=True)
    resumed = next(t for t, f in timed if f.kind == "audio" and f.pcm[0] == 5)
    assert resumed == 0.4 and audio_ids([f for _, f in timed]) == list(range(10))
    assert jb.stats.lost == 0 and jb.stats.underrun == 2  # in the pause, and at the end


def test_a_late_burst_is_passed_on_at_once_without_skipping() -> None:
    # The first 12 packets arrive together 240 ms late (a start-up burst), then the stream is steady:
    # nothing is held back to pace them, so nothing builds up and nothing has to be skipped.
    arr = [(0.24, i, i * 160, 1) for i in range(12)] + [(i * F, i, i * 160, 1) for i in range(12, 200)]
    jb = JitterBuffer(max_delay=0.4)
    timed = run(jb, arr, until=3.0, timed=True)
    assert [t for t, f in timed if f.kind == "audio"][:13] == [0.24] * 13
    assert audio_ids([f for _, f in timed]) == list(range(151))
    assert jb.stats.lost == jb.stats.overflow == 0 and jb.depth == 0


def test_a_stalled_clock_gets_no_burst_of_silence() -> None:
    jb = JitterBuffer()
    jb.push(0, 0, 1, frame(0), 0.0)
    assert audio_ids(due(jb, 0.0)) == [0]
    # frame 1 was due at 0.02 s and is overdue from 0.08 s: at 0.305 s, one frame per 20 ms since then
    assert len(due(jb, 0.305)) == 12
    # nearly 10 s owed: the process was stalled, not the caller silent
    assert len(due(jb, 10.0)) == 1
    assert due(jb, 10.01) == [] and len(due(jb, 10.025)) == 1

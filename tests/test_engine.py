"""The Gemma engine on the twin: prefix reuse across turns, history reset, long
audio, and what each turn evaluates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_assistant.audio.format import Audio
from edge_assistant.config import AudioConfig, EndpointConfig, EngineConfig
from edge_assistant.errors import AudioInputError, UsageError
from edge_assistant.llm.audio_turn import Interruption, TurnCancelled
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.turn import prepare_audio

from scripted import ScriptedEngine
from speech import concat, silence, speak

MIN_SPEECH_MS = EndpointConfig().min_speech_ms

pytestmark = pytest.mark.slow
TURN_END_TOKENS = 2  # "<turn|>" "\n", evaluated after each reply to keep the history


@pytest.fixture(scope="module")
def engine(twin):
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=12, seed=1)) as loaded:
        yield loaded


def test_second_turn_evaluates_only_its_new_tokens(engine: GemmaEngine) -> None:
    engine.reset_history()
    system = engine.context_tokens
    assert system == engine.system_prompt_tokens
    first = engine.respond(speak("Is it going to rain tomorrow?").samples).stats
    second = engine.respond(speak("And the day after?").samples).stats

    for stats in (first, second):
        assert stats.evaluated_this_turn == stats.prompt_tokens + stats.audio_tokens + stats.generated_tokens + TURN_END_TOKENS
        # A whole recording: every prompt token is evaluated after the speech ended.
        assert stats.after_speech_end == stats.prompt_tokens + stats.audio_tokens
    # The system prompt and the first turn are reused, not evaluated again.
    assert second.context_tokens == system + first.evaluated_this_turn + second.evaluated_this_turn
    assert second.evaluated_this_turn < second.context_tokens - system
    assert second.prompt_tokens == first.prompt_tokens  # the same user-turn wrapper


def test_reset_history_returns_to_the_system_prompt(engine: GemmaEngine) -> None:
    engine.respond(speak("Tell me a joke.").samples)
    engine.reset_history()
    assert engine.context_tokens == engine.system_prompt_tokens
    stats = engine.respond(speak("Tell me a joke.").samples).stats
    assert stats.context_tokens == engine.system_prompt_tokens + stats.evaluated_this_turn


def test_same_seed_same_reply_after_reset(twin) -> None:
    """Rolling the cache back to the system prompt leaves no trace of the old turn."""
    audio = speak("What time is it?").samples
    settings = EngineConfig(max_tokens=10, temperature=0.0)
    with GemmaEngine(twin.model, twin.mmproj, settings) as engine:
        fresh = engine.respond(audio).text
        engine.respond(speak("Something else entirely.").samples)
        engine.reset_history()
        assert engine.respond(audio).text == fresh


def test_without_history_every_turn_starts_after_the_system_prompt(twin) -> None:
    settings = EngineConfig(max_tokens=8, keep_history=False)
    with GemmaEngine(twin.model, twin.mmproj, settings) as engine:
        audio = speak("Turn on the lights.").samples
        for _ in range(2):
            stats = engine.respond(audio).stats
            assert stats.context_tokens == engine.system_prompt_tokens + stats.evaluated_this_turn
            assert stats.evaluated_this_turn == stats.prompt_tokens + stats.audio_tokens + stats.generated_tokens


def long_speech(seconds: float) -> Audio:
    sentence = speak("This is a long recording that keeps going so that it passes the thirty second limit.")
    parts = []
    while sum(len(part) for part in parts) < seconds * 16000:
        parts += [sentence.samples, silence(0.2)]
    return concat(*parts)


def test_35_seconds_split_into_30_second_clips(engine: GemmaEngine) -> None:
    speech = prepare_audio(long_speech(35), AudioConfig(), MIN_SPEECH_MS)
    assert speech.seconds > 33
    engine.reset_history()
    stats = engine.respond(speech.samples).stats
    assert abs(stats.audio_tokens - 25 * speech.seconds) <= 4
    assert stats.generated_tokens >= 1


def test_keep_last_keeps_30_seconds(engine: GemmaEngine, caplog: pytest.LogCaptureFixture) -> None:
    speech = prepare_audio(long_speech(35), AudioConfig(long_audio="keep_last"), MIN_SPEECH_MS)
    assert speech.seconds == pytest.approx(30.0, abs=0.01)
    assert "keeping the last 30 s" in caplog.text
    engine.reset_history()
    assert abs(engine.respond(speech.samples).stats.audio_tokens - 750) <= 2


def test_speech_over_max_seconds_is_refused() -> None:
    with pytest.raises(AudioInputError, match="audio.max_seconds"):
        prepare_audio(long_speech(40), AudioConfig(max_seconds=32), MIN_SPEECH_MS)


def test_audio_that_cannot_fit_the_context_is_a_clear_error(twin) -> None:
    with GemmaEngine(twin.model, twin.mmproj, EngineConfig(n_ctx=512, max_tokens=8)) as engine:
        with pytest.raises(UsageError, match="does not fit the context"):
            engine.respond(np.zeros(16000 * 20, dtype=np.float32))
        # A question that fits still works afterwards.
        assert engine.respond(speak("Hello?").samples).stats.generated_tokens >= 0


@pytest.mark.parametrize("kv_cache_type", ["q8_0", "q4_0", "f16"])
def test_every_kv_cache_type_answers(twin, kv_cache_type: str) -> None:
    settings = dataclasses.replace(EngineConfig(), kv_cache_type=kv_cache_type, max_tokens=4)
    with GemmaEngine(twin.model, twin.mmproj, settings) as engine:
        stats = engine.respond(speak("Hello?").samples).stats
        assert stats.audio_tokens > 0 and stats.generated_tokens + (stats.stopped_by == "end_of_turn") >= 1


# -- the turn session: exact streaming, rollback, cancellation --


def question_of(seconds: float) -> np.ndarray:
    """Speech (and the pauses of a talker) filling ``seconds``."""
    sentence = np.concatenate([speak("What is the tallest mountain in Europe and how high is it?").samples, silence(0.3)])
    return np.resize(sentence, int(seconds * 16000)).astype(np.float32)


def first_token_logits(engine: GemmaEngine, audio: np.ndarray, step_seconds: float | None, keep: int | None = None):
    """The logits for the first reply token after feeding ``audio`` in steps (None:
    at once) and ending it at ``keep`` samples; the turn is rolled back."""
    turn = engine.begin_turn(len(audio) / 16000)
    try:
        step = len(audio) if step_seconds is None else int(step_seconds * 16000)
        for start in range(0, len(audio), step):
            turn.feed(audio[start : start + step])
        turn.end_audio(keep)
        return turn.next_token_logits(), turn.stats
    finally:
        turn.rollback()


@pytest.mark.parametrize(("seconds", "steps"), [(5.0, (0.3, 1.0, 2.7)), (40.0, (4.1, 9.7))], ids=["5s", "40s"])
def test_streamed_audio_gives_the_one_shot_logits(engine: GemmaEngine, seconds: float, steps: tuple[float, ...]) -> None:
    """Gemma 4's audio encoder sees no later block and audio tokens are causal in
    the model: fed in steps, the cache and the next-token logits are the same as
    with the whole clip at once (40 s crosses mtmd's 30 s clip boundary)."""
    engine.reset_history()
    audio = question_of(seconds)
    expected, one_shot = first_token_logits(engine, audio, None)
    for step in steps:
        logits, stats = first_token_logits(engine, audio, step)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3 * np.abs(expected).max())
        assert stats.audio_tokens == one_shot.audio_tokens
        # Only the last unfinished encoder block (<= 12 tokens) and the closing text
        # are left when the audio ends.
        assert stats.after_speech_end <= 12 + len(engine._audio_suffix_tokens)
    assert engine.context_tokens == engine.system_prompt_tokens
    engine.check_cache()


def test_audio_cut_back_at_the_end_equals_the_shorter_clip(engine: GemmaEngine) -> None:
    """The endpointer ends an utterance after trailing silence was already fed:
    tokens made from the extra audio are taken back out of the cache."""
    engine.reset_history()
    audio = question_of(5.0)
    expected, _ = first_token_logits(engine, audio[:70000], None)
    logits, stats = first_token_logits(engine, np.concatenate([audio, silence(1.0)]), 0.5, keep=70000)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3 * np.abs(expected).max())
    assert stats.audio_tokens == engine.audio_token_estimate(70000 / 16000)


def test_audio_closed_early_in_a_pause_and_reopened_gives_the_one_shot_logits(engine: GemmaEngine) -> None:
    """The speaker paused, the turn was closed early and a reply begun ahead of
    the endpoint, then they went on: the reopened turn ends with the same cache
    as the whole question at once, and nothing of the early reply stays."""
    engine.reset_history()
    audio = question_of(5.0)
    expected, one_shot = first_token_logits(engine, audio, None)
    turn = engine.begin_turn(5.0)
    try:
        for start in range(0, 52000, 8000):
            turn.feed(audio[start : start + 8000])
        turn.end_audio(45000, early=True)
        turn.generate(max_tokens=3)
        assert turn.stats.generated_tokens == 3
        turn.reopen_audio()
        assert (turn.stats.generated_tokens, turn.stats.stopped_by) == (0, "")
        engine.check_cache()
        turn.feed(audio[56000:])
        turn.end_audio()
        np.testing.assert_allclose(turn.next_token_logits(), expected, rtol=0, atol=1e-3 * np.abs(expected).max())
        assert (turn.stats.audio_tokens, turn.stats.prompt_tokens) == (one_shot.audio_tokens, one_shot.prompt_tokens)
    finally:
        turn.rollback()
    engine.check_cache()


def test_audio_closed_early_leaves_nothing_to_evaluate_after_the_speech_ends(engine: GemmaEngine) -> None:
    engine.reset_history()
    audio = np.concatenate([question_of(5.0), silence(0.5)])
    expected, _ = first_token_logits(engine, audio[:70000], None)
    turn = engine.begin_turn(6.0)
    try:
        turn.feed(audio)
        turn.end_audio(70000, early=True)
        turn.note_speech_end()  # the endpoint confirms the pause
        np.testing.assert_allclose(turn.next_token_logits(), expected, rtol=0, atol=1e-3 * np.abs(expected).max())
        turn.generate()
        assert turn.stats.after_speech_end == 0
    finally:
        turn.rollback()
    engine.check_cache()


def test_a_barge_in_keeps_the_question_and_the_reply_as_far_as_it_was_heard(twin) -> None:
    """Interrupted while generating, the turn stays in the history up to what the
    user heard (by reply characters); interrupted after the reply was complete,
    the next turn cuts it back first. The cache matches the bookkeeping after each."""
    model = ScriptedEngine(twin.model, twin.mmproj, "One two three four five six seven eight nine ten.")
    engine = model.engine
    try:
        full = engine.respond(speak("Count to ten.").samples).stats
        engine.reset_history()
        interruption, received = Interruption(), []

        def barge_in_after_some_text(piece: str) -> None:
            received.append(piece)
            if len("".join(received)) >= 20 and interruption.heard_chars is None:
                interruption.heard_chars = 8  # "One two " was played
                engine.cancel()

        cut = engine.respond(speak("Count to ten.").samples, barge_in_after_some_text, interruption=interruption).stats
        assert cut.stopped_by == "interrupted"
        heard_tokens = len(engine.tokenize("One two"))
        assert cut.context_tokens == full.context_tokens - full.generated_tokens + heard_tokens
        engine.check_cache()

        engine.reset_history()
        complete = engine.respond(speak("Count to ten.").samples, interruption=(later := Interruption())).stats
        assert complete.context_tokens == full.context_tokens
        later.heard_chars = 8  # the barge-in came while it was being spoken
        engine.trim_last_reply(later)
        assert engine.context_tokens == cut.context_tokens
        engine.check_cache()
        engine.trim_last_reply(Interruption(0))  # not that reply's interruption: nothing happens
        assert engine.context_tokens == cut.context_tokens
    finally:
        model.close()


def test_a_cancel_stops_llama_cpp_inside_an_evaluation(engine: GemmaEngine) -> None:
    """ggml's abort callback ends llama_decode mid-graph: a 5 s sub-batch on a
    slow board is not waited out, and llama.cpp drops the stopped positions so
    the cache still matches the bookkeeping."""
    engine.reset_history()
    turn = engine.begin_turn(1.0)
    before = engine.context_tokens
    try:
        turn.cancel()
        with pytest.raises(TurnCancelled):
            engine._decode_tokens(engine.tokenize("a sentence of text to evaluate " * 4), want_logits=False)
        assert engine.context_tokens == before
        engine.check_cache()
    finally:
        turn.rollback()
    engine.check_cache()


def test_a_failure_mid_prefill_rolls_the_turn_back_and_the_next_turn_works(
    engine: GemmaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.reset_history()
    first = engine.respond(speak("Hello there.").samples).stats
    before = engine.context_tokens
    real = engine._decode_embeddings

    def fail_after_some(embeddings, cancelled):
        real(embeddings[:5], cancelled)  # the cache has moved on when it fails
        raise RuntimeError("injected decode failure")

    monkeypatch.setattr(engine, "_decode_embeddings", fail_after_some)
    with pytest.raises(RuntimeError, match="injected"):
        engine.respond(speak("What time is it?").samples)
    monkeypatch.undo()
    assert engine.context_tokens == before
    engine.check_cache()
    second = engine.respond(speak("What time is it?").samples).stats
    assert second.context_tokens == first.context_tokens + second.evaluated_this_turn


def test_cancel_is_per_turn(engine: GemmaEngine) -> None:
    """A cancel with no turn open (a barge-in that came late) does not cancel the
    next turn; a cancel during a turn's prefill rolls it back."""
    engine.reset_history()
    engine.cancel()
    assert engine.respond(speak("Hello?").samples).stats.stopped_by != "cancelled"
    before = engine.context_tokens
    turn = engine.begin_turn(5.0)
    turn.feed(question_of(2.0))
    turn.cancel()
    from edge_assistant.llm.audio_turn import TurnCancelled

    with pytest.raises(TurnCancelled):
        turn.feed(question_of(2.0))
    turn.rollback()
    assert engine.context_tokens == before
    engine.check_cache()


def test_a_failure_while_generating_rolls_the_turn_back(twin) -> None:
    """An exception from the reply's consumer (the speaker) or a decode is not an
    interruption: nothing of the turn stays, not even the question."""
    model = ScriptedEngine(twin.model, twin.mmproj, "One two three four five six seven eight nine ten.")
    engine = model.engine
    try:
        before = engine.context_tokens
        received: list[str] = []

        def fail_after_some_text(piece: str) -> None:
            received.append(piece)
            if len(received) == 3:
                raise RuntimeError("injected speaker failure")

        with pytest.raises(RuntimeError, match="injected"):
            engine.respond(speak("Count to ten.").samples, fail_after_some_text)
        assert engine.context_tokens == before
        engine.check_cache()
    finally:
        model.close()


def test_a_turn_cancelled_before_it_opens_evaluates_nothing(engine: GemmaEngine) -> None:
    """Its own cancel was set while it waited for the previous turn: respond
    reports a cancel (not an error) and the cache is as before."""
    engine.reset_history()
    before = engine.context_tokens
    interruption = Interruption()
    interruption.cancel()
    assert engine.respond(speak("Hello?").samples, interruption=interruption).stats.stopped_by == "cancelled"
    assert engine.context_tokens == before
    engine.check_cache()

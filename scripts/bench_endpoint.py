#!/usr/bin/env python3
"""Benchmark the endpoint in a talking room: how late the utterance ends after the
question does, how much of the question's end is lost, and how many questions
never end before ``endpoint.max_speech_seconds``. Prints numbers, not pass/fail.

Each question (24 of them, Piper's joe voice at three speeds) is said at a
speaker level (its voiced part's RMS, dBFS) over a background some dB under it:
a television (Piper reading prose, from across the room: scripts/room_audio.py),
music (chords and drums), both, or the room tests' noises (white, pink, brown,
hum, fan). The background runs from LEAD_SECONDS before the question, as after a
wake word said in the same breath, and on after it. A fresh Endpointer with the
shipped configuration (or --config's) hears each stream in 30 ms frames, as the
daemon does after the wake word.

Per cell: the end event's lateness after the true end of speech (median, worst;
the true end is the last 10 ms of the clean question within 30 dB of its voiced
level), the share within end_silence_ms + 500 ms, the most of the question's end
lost (kept audio ends before the true end), how many lost more than 150 ms, and
how many never ended (forced at max_speech_seconds). The summary line covers the
television and music cells 15 dB or more under the speaker, as issue 26 asks.

--follow-ups: instead, after each question's end the background plays on alone
for conversation.follow_up_seconds, the endpointer reset (as while the reply
plays) with the question's level carried over: in how many of these windows
does the background alone make a turn (an utterance ended, not discarded)?

    .venv/bin/python scripts/bench_endpoint.py [--kinds speech,music] [--under 10,15,20,25,30,35]
        [--speaker=-30,-25,-20,-15] [--trail-off DB] [--questions 24] [--config FILE] [--cells] [--failures]
        [--follow-ups]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # room_audio
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the room tests' noises

from room_audio import SPEEDS, music, questions, television  # noqa: E402
from speech import NOISE_KINDS, VOICE_PATH, audible_extent, noise, voiced_db  # noqa: E402

from edge_assistant.audio.format import MODEL_SAMPLE_RATE  # noqa: E402
from edge_assistant.config import Config, load_config  # noqa: E402
from edge_assistant.errors import EdgeAssistantError  # noqa: E402
from edge_assistant.endpoint import Endpointer, UtteranceDiscarded, UtteranceEnded  # noqa: E402

QUESTIONS = (
    "What time is it?",
    "Set a timer for ten minutes.",
    "What is the tallest mountain in Europe?",
    "Is the library open on Sundays?",
    "Turn off the lights in the kitchen.",
    "How many days until Christmas?",
    "What's the weather like tomorrow morning?",
    "Remind me to call my sister at six.",
    "How do you say thank you in Spanish?",
    "Play some relaxing music.",
    "What is the capital of Australia?",
    "How long should I boil an egg?",
    "Wake me up at seven tomorrow.",
    "Who wrote Pride and Prejudice?",
    "What is twelve times fourteen?",
    "Add milk and eggs to the shopping list.",
    "How far is the moon from the earth?",
    "Can you tell me a joke?",
    "What does photosynthesis mean?",
    "Turn the volume down a little.",
    "When does the sun set today?",
    "How many ounces are in a pound?",
    "Is it going to rain this weekend?",
    "Set an alarm for half past six.",
)
BACKGROUNDS = ("speech", "music", "speech+music", *NOISE_KINDS)
TALKING = ("speech", "music", "speech+music")  # what issue 26's criterion is about
LEAD_SECONDS = 0.3
LATE_MARGIN_MS = 500  # the criterion: ended within end_silence_ms + this
CLIP_LIMIT_MS = 150  # and no question loses more of its end than this
TV_SECONDS = 3660.0  # the cached television (bench_wake_room.py uses the same hour)
MUSIC_SECONDS = 600.0


def at_level(samples: np.ndarray, level_db: float) -> np.ndarray:
    return (samples * 10 ** ((level_db - voiced_db(samples)) / 20)).astype(np.float32)


@dataclass(frozen=True)
class Question:
    samples: np.ndarray  # at 0 dB voiced level
    end: int  # the true end of speech, samples into it


def prepare_questions(count: int, trail_off_db: float = 0.0) -> list[Question]:
    """The questions at 0 dB voiced level; ``trail_off_db``: the last 40 % of the
    speech fades by that much (linearly in dB), the true end staying where the
    steady voice's would be."""
    prepared = []
    for spoken in questions(VOICE_PATH, QUESTIONS[:count]):
        spoken = at_level(spoken, 0.0)
        start, end = audible_extent(spoken)
        if trail_off_db:
            fade_from = start + int(0.6 * (end - start))
            position = np.clip((np.arange(len(spoken)) - fade_from) / (end - fade_from), 0.0, 1.0)
            spoken = (spoken * 10 ** (-trail_off_db * position / 20)).astype(np.float32)
        prepared.append(Question(spoken, end))
    return prepared


class Backgrounds:
    """Background pieces of a given length at a given level, each question its own
    piece (a different part of the television, the band, the noise)."""

    def __init__(self, kinds: list[str]) -> None:
        self.tv = television(VOICE_PATH, TV_SECONDS) if any("speech" in kind for kind in kinds) else None
        self.music = music(MUSIC_SECONDS, seed=1) if any("music" in kind for kind in kinds) else None

    def piece(self, kind: str, length: int, level_db: float, number: int) -> np.ndarray:
        if kind in NOISE_KINDS:
            return noise(length / MODEL_SAMPLE_RATE + 0.01, 10 ** (level_db / 20), seed=number, kind=kind)[:length]
        parts = []
        if "speech" in kind:
            parts.append(at_level(self._cut(self.tv, length, number), level_db))
        if "music" in kind:
            parts.append(at_level(self._cut(self.music, length, number), level_db - (6.0 if parts else 0.0)))
        return sum(parts)

    @staticmethod
    def _cut(audio: np.ndarray, length: int, number: int) -> np.ndarray:
        start = np.random.default_rng(number).integers(0, len(audio) - length)
        return audio[start : start + length]


@dataclass
class Cell:
    late_ms: list[float] = field(default_factory=list)  # end event after the true end, for those that ended
    lost_ms: list[float] = field(default_factory=list)  # of the question's end, every question
    never: int = 0  # forced at max_speech_seconds, or no end at all
    runs: int = 0


def endpointer_for(config: Config) -> Endpointer:
    return Endpointer(config.endpoint, config.audio.vad_aggressiveness, config.input.frame_ms, config.audio.speech_padding_ms)


def run_one(config: Config, stream: np.ndarray, question_start: int, true_end: int) -> tuple[float | None, float]:
    """(end event - true end in ms, or None if it never ended; ms of the
    question's end lost)."""
    endpointer = endpointer_for(config)
    size = endpointer.frame_samples
    to_ms = 1000 / MODEL_SAMPLE_RATE
    for start in range(0, len(stream) - size + 1, size):
        event = endpointer.push(stream[start : start + size], start + size)
        if isinstance(event, UtteranceEnded) and event.start_sample + len(event.samples) > question_start:
            kept_end = event.start_sample + len(event.samples)
            lost = max(0.0, (true_end - kept_end) * to_ms)
            return (None if event.forced else (start + size - true_end) * to_ms), lost
        if isinstance(event, UtteranceDiscarded) and start + size > true_end:
            break
    return None, float((true_end - question_start) * to_ms)


def follow_up_by_background(config: Config, stream: np.ndarray) -> bool | None:
    """After the first utterance (the question) ended, does the background alone
    make a turn within follow_up_seconds? None if the question never ended."""
    endpointer = endpointer_for(config)
    size = endpointer.frame_samples
    window = int(config.conversation.follow_up_seconds * MODEL_SAMPLE_RATE)
    question_end = None
    for start in range(0, len(stream) - size + 1, size):
        end = start + size
        if question_end is not None and end - question_end > window:
            return False
        event = endpointer.push(stream[start:end], end)
        if question_end is None and isinstance(event, UtteranceEnded | UtteranceDiscarded):
            question_end = end
            endpointer.reset()  # the reply plays; the question's level stays
        elif isinstance(event, UtteranceEnded):
            return True
    return None if question_end is None else False


def follow_ups(config: Config, prepared: list[Question], backgrounds: Backgrounds, kinds: list[str],
               unders: list[float], speakers: list[float]) -> None:
    lead = int(LEAD_SECONDS * MODEL_SAMPLE_RATE)
    print(f"# after each of {len(prepared)} questions, the background alone for conversation.follow_up_seconds "
          f"{config.conversation.follow_up_seconds:g} s: windows in which it made a turn")
    for kind in kinds:
        for under in unders:
            made = windows = 0
            for speaker in speakers:
                for number, question in enumerate(prepared):
                    speech = question.samples * 10 ** (speaker / 20)
                    length = lead + len(speech) + int((config.conversation.follow_up_seconds + 3.0) * MODEL_SAMPLE_RATE)
                    stream = backgrounds.piece(kind, length, speaker - under, number)
                    stream[lead : lead + len(speech)] += speech
                    turn = follow_up_by_background(config, stream)
                    windows += turn is not None
                    made += bool(turn)
            print(f"{kind:13s} {under:5.0f} dB under: a turn by the background alone in {made} of {windows} windows "
                  f"({percent(made, windows)})", flush=True)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(BACKGROUNDS), help=f"backgrounds, of {', '.join(BACKGROUNDS)}")
    parser.add_argument("--under", default="10,15,20,25,30,35", help="background levels, dB under the speaker")
    parser.add_argument("--speaker", default="-30,-25,-20,-15", help="speaker levels, dBFS (voiced RMS)")
    parser.add_argument("--trail-off", type=float, default=0.0, metavar="DB",
                        help="the speaker trails off: the last 40 %% of each question fades by DB (default 0)")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help=f"how many questions (1-{len(QUESTIONS)}), each at 3 speeds")
    parser.add_argument("--config", help="a config.toml whose [endpoint] and [audio] to use (default: the shipped settings)")
    parser.add_argument("--cells", action="store_true", help="print every cell, not only the rows per background and level")
    parser.add_argument("--failures", action="store_true", help="name each question that ended late, lost its end or never ended")
    parser.add_argument("--follow-ups", action="store_true", help="count follow-up turns the background makes alone instead")
    args = parser.parse_args()
    try:
        kinds = [kind for kind in args.kinds.split(",") if kind]
        unknown = [kind for kind in kinds if kind not in BACKGROUNDS]
        if unknown or not kinds:
            raise ValueError(f"unknown background {', '.join(unknown) or '(none)'}: choose from {', '.join(BACKGROUNDS)}")
        try:
            unders = [float(value) for value in args.under.split(",")]
            speakers = [float(value) for value in args.speaker.split(",")]
        except ValueError:
            raise ValueError("--under and --speaker take comma-separated numbers, like --speaker=-30,-20") from None
        if not 0 <= args.trail_off <= 30:
            raise ValueError("--trail-off must be between 0 and 30 dB")
        if not 1 <= args.questions <= len(QUESTIONS):
            raise ValueError(f"--questions must be between 1 and {len(QUESTIONS)}")
        if not all(-60 <= level <= 0 for level in speakers) or not all(0 <= under <= 60 for under in unders):
            raise ValueError("speaker levels must be in -60..0 dBFS and background levels 0..60 dB under them")
        config = load_config(args.config) if args.config else Config()
    except ValueError as error:
        sys.exit(f"bench_endpoint: {error}")
    except EdgeAssistantError as error:
        sys.exit(f"bench_endpoint: {error}")

    started = time.perf_counter()
    prepared = prepare_questions(args.questions, args.trail_off)
    backgrounds = Backgrounds(kinds)
    if args.follow_ups:
        follow_ups(config, prepared, backgrounds, kinds, unders, speakers)
        print(f"# {time.perf_counter() - started:.0f} s")
        return
    endpoint = config.endpoint
    limit_ms = endpoint.end_silence_ms + LATE_MARGIN_MS
    lead = int(LEAD_SECONDS * MODEL_SAMPLE_RATE)
    print(f"# {len(prepared)} questions ({args.questions} texts x 3 speeds, trailing off by {args.trail_off:g} dB), "
          f"end_silence_ms {endpoint.end_silence_ms}, "
          f"max_speech_seconds {endpoint.max_speech_seconds:g}, frame {config.input.frame_ms} ms; "
          f"late/worst: end event after the true end; lost: of the question's end")
    print(f"{'background':13s} {'under':>5s} {'speaker':>7s} {'late med':>8s} {'worst':>6s} {'<=' + str(limit_ms):>7s} "
          f"{'lost max':>8s} {'>150ms':>6s} {'never':>5s}")
    cells: dict[tuple[str, float, float], Cell] = {}
    for kind in kinds:
        for under in unders:
            for speaker in speakers:
                cell = cells.setdefault((kind, under, speaker), Cell())
                for number, question in enumerate(prepared):
                    speech = question.samples * 10 ** (speaker / 20)
                    length = lead + int((endpoint.max_speech_seconds + 1.0) * MODEL_SAMPLE_RATE)
                    stream = backgrounds.piece(kind, length, speaker - under, number)
                    stream[lead : lead + len(speech)] += speech
                    late, lost = run_one(config, stream, lead, lead + question.end)
                    cell.runs += 1
                    if args.failures and (late is None or late > limit_ms or lost > CLIP_LIMIT_MS):
                        text, speed = QUESTIONS[number // len(SPEEDS)], SPEEDS[number % len(SPEEDS)]
                        print(f"  {kind} {under:g} dB under, speaker {speaker:g} dBFS, {text!r} at length_scale {speed}: "
                              f"{'never ended' if late is None else f'ended {late:.0f} ms late'}, lost {lost:.0f} ms")
                    cell.lost_ms.append(lost)
                    if late is None:
                        cell.never += 1
                    else:
                        cell.late_ms.append(late)
                if args.cells or speaker == speakers[-1]:
                    shown = cell if args.cells else merge(cells, kind, under, speakers)
                    label = f"{speaker:7.0f}" if args.cells else "    all"
                    print(row(kind, under, label, shown, limit_ms), flush=True)
    print()
    for name, chosen in (
        ("talking, >= 15 dB under", [c for (k, u, _), c in cells.items() if k in TALKING and u >= 15]),
        ("talking, 10 dB under", [c for (k, u, _), c in cells.items() if k in TALKING and u < 15]),
        ("noises, all levels", [c for (k, _, _), c in cells.items() if k not in TALKING]),
    ):
        if chosen:
            print(summary(name, combine(chosen), limit_ms))
    print(f"# {sum(c.runs for c in cells.values())} runs in {time.perf_counter() - started:.0f} s")


def combine(chosen: list[Cell]) -> Cell:
    total = Cell()
    for cell in chosen:
        total.late_ms += cell.late_ms
        total.lost_ms += cell.lost_ms
        total.never += cell.never
        total.runs += cell.runs
    return total


def merge(cells: dict[tuple[str, float, float], Cell], kind: str, under: float, speakers: list[float]) -> Cell:
    return combine([cells[(kind, under, speaker)] for speaker in speakers])


def row(kind: str, under: float, speaker: str, cell: Cell, limit_ms: int) -> str:
    late = cell.late_ms or [float("nan")]
    within = sum(value <= limit_ms for value in cell.late_ms)
    return (f"{kind:13s} {under:5.0f} {speaker} {statistics.median(late):8.0f} {max(late):6.0f} {percent(within, cell.runs):>7s} "
            f"{max(cell.lost_ms):8.0f} {sum(v > CLIP_LIMIT_MS for v in cell.lost_ms):6d} {cell.never:5d}")


def summary(name: str, cell: Cell, limit_ms: int) -> str:
    within = sum(value <= limit_ms for value in cell.late_ms)
    late = cell.late_ms or [float("nan")]
    return (f"summary, {name}: {cell.runs} questions, ended within end_silence_ms + {LATE_MARGIN_MS} ms in "
            f"{percent(within, cell.runs)} (median {statistics.median(late):.0f} ms, worst {max(late):.0f} ms after the "
            f"true end), never ended {cell.never}, lost > {CLIP_LIMIT_MS} ms of the end {sum(v > CLIP_LIMIT_MS for v in cell.lost_ms)} "
            f"(most {max(cell.lost_ms):.0f} ms)")


if __name__ == "__main__":
    main()

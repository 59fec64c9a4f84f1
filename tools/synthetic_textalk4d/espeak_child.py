"""Speak one sentence with libespeak-ng and report its events; run by voices_espeak.synthesize_raw.

    python espeak_child.py VOICE RATE_WPM PITCH RANGE OUT.wav  < sentence (UTF-8)

Writes OUT.wav (mono 16-bit at the library's rate) and prints JSON
{"sample_rate": 22050, "events": [[type, text_position, sample, ipa], ...]} on stdout.
A separate process per sentence because the library keeps generator state between sentences
(see voices_espeak.synthesize_raw). Standard library only, so the process starts in ~30 ms.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import wave

# speak_lib.h (API 1.51)
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7


class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", EventId)]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                            ctypes.POINTER(Event))


def speak(text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int):
    lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                 INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed (espeak-ng-data missing?)")
    pcm = bytearray()
    events = []

    def on_synth(wav, n_samples, event_list):
        if wav and n_samples > 0:
            pcm.extend(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while event_list[i].type != EVENT_LIST_TERMINATED:
            event = event_list[i]
            name = ""
            if event.type == EVENT_PHONEME:
                # 8 bytes, NUL-padded; a long IPA string can be cut inside a UTF-8 sequence.
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "ignore")
            events.append([event.type, event.text_position, event.sample, name])
            i += 1
        return 0

    callback = CALLBACK(on_synth)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
    lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
    lib.espeak_SetParameter(PARAM_RANGE, pitch_range, 0)
    data = text.encode("utf-8") + b"\0"
    lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    return rate, bytes(pcm), events


def main(argv: list[str]) -> int:
    voice, rate_wpm, pitch, pitch_range, out = argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
    text = sys.stdin.buffer.read().decode("utf-8")
    rate, pcm, events = speak(text, voice, rate_wpm, pitch, pitch_range)
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm)         # espeak's samples are native-endian int16 (x86: little)
    json.dump({"sample_rate": rate, "events": events}, sys.stdout, ensure_ascii=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

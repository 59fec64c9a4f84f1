"""Real human speech checks for the bundled model (tools/real_speech_check.py, docs/REAL_SPEECH.md).

- `measures`: frame levels, energy VAD, distance to speech, mouth aperture (midline lip gap).
- `checks`: per-clip statistics and the four checks (closed in silence, open in speech,
  speech-vs-silence AUC, bilabial closure), frozen thresholds, the verdict over a set.
- `reference`: the same statistics on the synthetic test-A ground truth and model output;
  thresholds derived from the ground truth.
- `recordings`: the real recordings (sources, licences, transcripts, phone timings; flite + DTW
  alignment where no labels exist).
- `run`: the model on a recording; log-mel diagnostics of real vs synthetic audio.
- `equalise`: inference-only long-term-spectrum matching (an experiment).
- `plot`, `report`: the PNG and the markdown page.
"""

"""core/lip_seal.py: near-closures of the generated lips pressed shut, on the template's maps."""

import numpy as np
import pytest
import torch

from textalker_blender.core.lip_seal import DEFAULT_SEAL_MM, SEAL_EXPONENT, LipSeal, sealed_gap_mm

CLOSED_MM = 1.67  # the real-speech check's "closed" line (tools/real_speech/checks.py)
SEAL_MM = 4.0  # a distance for the geometry tests (the Pipeline scales the default per frame)


def test_the_curve_only_moves_gaps_between_rest_and_the_seal_distance():
    rest, seal = 0.67, 4.0
    gaps = np.array([-3.0, 0.0, rest, 4.0, 4.5, 12.0])
    np.testing.assert_array_equal(sealed_gap_mm(gaps, rest, seal), gaps)  # outside: untouched
    inside = np.linspace(rest + 1e-3, seal - 1e-3, 200)
    sealed = sealed_gap_mm(inside, rest, seal)
    assert np.all(sealed < inside)  # pressed closer...
    assert np.all(sealed > rest)  # ...but never past the rest gap
    assert np.all(np.diff(sealed) > 0)  # monotone: the lips still open when the model's do
    assert sealed[0] == pytest.approx(rest, abs=1e-3) and sealed[-1] == pytest.approx(seal, abs=1e-2)
    # A 3 mm near-closure (a missed /p/) counts as closed after a 4 mm seal; 3.9 mm does not.
    assert sealed_gap_mm(np.array(3.0), rest, SEAL_MM) <= CLOSED_MM
    assert sealed_gap_mm(np.array(3.9), rest, SEAL_MM) > CLOSED_MM
    # Where a closure is certain, the default distance shuts a 6 mm gap and leaves 8 mm open.
    assert sealed_gap_mm(np.array(6.0), rest, DEFAULT_SEAL_MM) <= CLOSED_MM
    assert sealed_gap_mm(np.array(8.0), rest, DEFAULT_SEAL_MM) > CLOSED_MM
    # One distance per frame: each frame its own.
    per_frame = sealed_gap_mm(np.array([3.0, 3.0, 3.0]), rest, np.array([0.0, SEAL_MM, 12.0]))
    assert per_frame[0] == 3.0 and per_frame[2] < per_frame[1] < 3.0
    as_torch = sealed_gap_mm(torch.from_numpy(inside), rest, seal).numpy()
    np.testing.assert_allclose(as_torch, sealed, rtol=1e-12)
    assert sealed_gap_mm(gaps, rest, rest) is gaps  # no span: nothing to do
    assert SEAL_EXPONENT > 1


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    try:
        return load_template()
    except FileNotFoundError:
        pytest.skip("template asset not built")


def _maps(template, **units) -> torch.Tensor:
    offsets = template.apply_units(template.unit_weights(**units))
    return torch.from_numpy(template.uv_rasterizer(64).rasterize(offsets)[None].astype(np.float32))


def _vertex_gap_mm(template, maps: torch.Tensor) -> float:
    from tools.real_speech.measures import mouth_aperture_mm

    return float(mouth_aperture_mm(template, template.uv_sampler(64).sample(maps.numpy()))[0])


def test_the_seal_closes_the_lips_the_user_sees_and_leaves_open_and_rest_frames(template):
    seal = LipSeal(template, 64)
    rest = _maps(template)
    assert float(seal.gap_mm(rest)[0]) == pytest.approx(seal.rest_mm, abs=1e-4)
    assert seal.apply(rest, SEAL_MM) is not rest
    torch.testing.assert_close(seal.apply(rest, SEAL_MM), rest)  # at rest: nothing added
    near = _maps(template, jawOpen=0.05)  # lips about 2.3 mm apart: a missed closure
    before = _vertex_gap_mm(template, near)
    assert before > CLOSED_MM
    sealed = seal.apply(near, SEAL_MM)
    after = _vertex_gap_mm(template, sealed)  # measured on the vertices, through the add-on's sampler
    assert after <= CLOSED_MM
    assert after == pytest.approx(float(sealed_gap_mm(np.array(before), seal.rest_mm, SEAL_MM)), abs=0.01)
    # The jaw stays where the model put it: only mouthClose was added.
    weights_before = template.estimate_unit_weights(template.uv_sampler(64).sample(near.numpy()))[0]
    weights_after = template.estimate_unit_weights(template.uv_sampler(64).sample(sealed.numpy()))[0]
    jaw, close = template.unit_index("jawOpen"), template.unit_index("mouthClose")
    assert weights_after[jaw] == pytest.approx(weights_before[jaw], abs=0.01)
    assert weights_after[close] > weights_before[close] + 0.02
    wide = _maps(template, jawOpen=0.4)  # a wide-open vowel (about 13.7 mm)
    torch.testing.assert_close(seal.apply(wide, 12.0), wide)
    assert seal.apply(near, 0.0) is near  # 0: off


def test_a_batch_is_sealed_frame_by_frame(template):
    seal = LipSeal(template, 64)
    frames = torch.cat([_maps(template, jawOpen=j) for j in (0.0, 0.05, 0.08, 0.3)])
    together = seal.apply(frames, SEAL_MM)
    one_by_one = torch.cat([seal.apply(frames[i:i + 1], SEAL_MM) for i in range(len(frames))])
    torch.testing.assert_close(together, one_by_one)
    gaps = seal.gap_mm(together).numpy()
    assert gaps[1] < gaps[2] < gaps[3]  # order kept


def test_the_pipeline_seals_where_its_detector_hears_closures_and_not_when_switched_off():
    from textalker_blender.blender import catalog
    from textalker_blender.core.audio import load_audio
    from textalker_blender.core.pipeline import Pipeline
    from tools.real_speech.measures import mouth_aperture_mm

    if not catalog.weights_path().is_file():
        pytest.skip("bundled weights not built")
    from core_helpers import speech_like

    pipeline = Pipeline.load(device="cpu")
    if pipeline.model.closure is None:
        pytest.skip("the bundled weights have no closure detector")
    audio = (speech_like(2.0), 16000)
    sealed = pipeline.generate(audio, steps=2)
    plain = pipeline.generate(audio, steps=2, lip_seal_mm=0)
    gap_sealed = mouth_aperture_mm(pipeline.template, sealed.offsets)
    gap_plain = mouth_aperture_mm(pipeline.template, plain.offsets)
    probability = pipeline.model.closure.probabilities(load_audio(audio), len(gap_plain))
    rest = pipeline.lip_seal.rest_mm
    expected = sealed_gap_mm(gap_plain, rest, DEFAULT_SEAL_MM * probability)
    np.testing.assert_allclose(gap_sealed, expected, atol=0.02)
    assert np.all(gap_sealed <= gap_plain + 1e-3)  # the seal only ever closes
    np.testing.assert_array_equal(sealed.wrinkle_maps, plain.wrinkle_maps)  # texture untouched

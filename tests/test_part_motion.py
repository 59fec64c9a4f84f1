"""Template parts (teeth, tongue, eyes) follow the face through the face-unit weights."""

from __future__ import annotations

import numpy as np
import pytest

from textalker_blender.blender import catalog
from textalker_blender.core import part_motion

pytestmark = pytest.mark.skipif(
    not (catalog.ASSETS_DIR / "template_head.npz").is_file(), reason="template head not built"
)


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    return load_template()


def test_jaw_open_in_the_head_opens_the_lower_teeth(template):
    weights = np.stack([
        template.unit_weights(jawOpen=0.6),
        template.unit_weights(jawOpen=0.2, mouthSmileLeft=0.5, mouthSmileRight=0.5),
        np.zeros(template.n_units, np.float32),
    ])
    head = template.apply_units(weights)
    fitted = part_motion.fit_unit_weights(head, template.unit_offsets)
    assert fitted.shape == (3, template.n_units) and fitted.min() >= 0 and fitted.max() <= 1
    # The weights may trade off between similar units; what must match is the motion they make.
    np.testing.assert_allclose(template.apply_units(fitted), head, atol=5e-4)
    parts = part_motion.part_offsets(template, head)
    assert set(parts) == set(part_motion.MOVING_PARTS) & set(template.parts)
    assert "eye_left" not in parts
    expected = template.apply_part_units("teeth_lower", weights)
    assert np.abs(expected[0]).max() > 0.005  # jawOpen 0.6 moves the lower teeth by millimetres
    np.testing.assert_allclose(parts["teeth_lower"], expected, atol=1e-3)
    assert np.abs(parts["teeth_lower"][2]).max() == 0.0  # neutral face: teeth at rest

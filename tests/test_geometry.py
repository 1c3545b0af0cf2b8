"""Orientation arithmetic on synthetic grids (independent of any file format)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_radreport.io.geometry import (
    CANONICAL_DIRECTION,
    obliquity_deg,
    orientation_codes,
    plan_reorientation,
    reorient,
)


def _index_to_lps(origin, spacing, direction, index):
    return np.asarray(origin) + (np.asarray(index) * np.asarray(spacing)) @ np.asarray(direction)


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, -1), (1, -1, 1), (-1, -1, -1)])
def test_reorient_reaches_canonical_and_keeps_every_voxel_in_place(perm, signs):
    rng = np.random.default_rng(0)
    direction = np.eye(3)[list(perm)] * np.array(signs)[:, None]
    array = rng.integers(-1000, 1000, size=(4, 5, 6)).astype(np.int16)
    spacing, origin = (2.0, 0.5, 1.5), np.array([10.0, -20.0, 30.0])
    plan = plan_reorientation(direction)
    out, new_spacing, new_origin, new_direction = reorient(array, spacing, origin, direction, plan)
    np.testing.assert_allclose(new_direction, CANONICAL_DIRECTION)
    assert orientation_codes(new_direction) == ("I", "P", "L")
    for index in itertools.product(*(range(n) for n in array.shape)):
        world = _index_to_lps(origin, spacing, direction, index)
        new_index = np.rint((world - new_origin)
                            @ np.linalg.inv(new_direction * np.array(new_spacing)[:, None]))
        assert out[tuple(new_index.astype(int))] == array[index]


def test_obliquity_of_a_rotated_grid():
    angle = np.radians(12.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    assert obliquity_deg(np.eye(3)) == pytest.approx(0.0)
    assert obliquity_deg(rotation) == pytest.approx(12.0, abs=1e-6)


def test_a_45_degree_tie_never_maps_two_axes_onto_one():
    c = np.sqrt(0.5)
    direction = np.array([[c, c, 0.0], [-c, c, 0.0], [0.0, 0.0, 1.0]])
    plan = plan_reorientation(direction)
    assert sorted(plan.perm) == [0, 1, 2]

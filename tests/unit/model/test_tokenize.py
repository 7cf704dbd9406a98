"""Padding and length bucketing (pure logic)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from unison.model.tokenize import length_buckets, pad


def padding_waste(lengths: Sequence[int], buckets: Sequence[npt.NDArray[np.int64]]) -> float:
    """Fraction of computed positions that are padding."""
    lengths_arr = np.asarray(lengths)
    computed = sum(int(lengths_arr[b].max()) * len(b) for b in buckets)
    return 1.0 - float(lengths_arr.sum()) / computed if computed else 0.0


def test_pad_right_pads_with_a_mask() -> None:
    ids, mask = pad([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_buckets_group_similar_lengths_and_cover_every_row() -> None:
    lengths = [30, 5, 200, 6, 31, 7, 199, 29]
    buckets = length_buckets(lengths, 3)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[5, 6, 7], [29, 30, 31], [199, 200]]
    naive = [np.arange(i, min(i + 3, len(lengths))) for i in range(0, len(lengths), 3)]
    assert padding_waste(lengths, buckets) < 0.05 < padding_waste(lengths, naive)

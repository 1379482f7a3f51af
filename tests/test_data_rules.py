"""The arithmetic of the job's data rules against hand-worked tables: the digits split (fastai's `RandomSplitter`
arithmetic), the per-class random hold-out of a folder without valid/, and how file names are shown."""
import pytest
from fastai.data.transforms import RandomSplitter

from fastai_resnetx.job.data import digits_split_sizes, _random_holdout, _holdout_note, display_name, _inside


@pytest.mark.parametrize('n_items, pct, sizes', [(None, 0.2, (1438, 359)), (100, 0.2, (80, 20)), (99, 0.2, (80, 19)),
                                                 (5000, 0.2, (1438, 359)), (10, 0.25, (8, 2)), (7, 0.5, (4, 3))])
def test_digits_split_sizes_are_random_splitters(n_items, pct, sizes):
    assert digits_split_sizes(n_items, pct) == sizes                       # the hand-worked table
    n = 1797 if n_items is None else min(n_items, 1797)
    train, valid = RandomSplitter(valid_pct=pct, seed=0)(list(range(n)))  # the oracle: fastai's own splitter
    assert (len(train), len(valid)) == sizes


def test_random_holdout_per_class_rounds_up_and_keeps_one_to_train():
    # ceil(0.2 * n) held out, but never the last image: n = 2 -> 1, 3 -> 1, 5 -> 1, 6 -> 2, 11 -> 3, 1 of 2 at 0.9
    by_class = {c: [f'{c}{i}' for i in range(n)] for c, n in (('a', 2), ('b', 3), ('c', 5), ('d', 6), ('e', 11))}
    train, valid = _random_holdout(by_class, 0.2, seed=0)
    assert {c: len(v) for c, v in valid.items()} == {'a': 1, 'b': 1, 'c': 1, 'd': 2, 'e': 3}
    assert all(sorted(train[c] + valid[c]) == sorted(fs) for c, fs in by_class.items())   # a partition per class
    assert _random_holdout(by_class, 0.2, seed=0) == (train, valid)                        # the seed decides
    assert _random_holdout(by_class, 0.2, seed=1) != (train, valid)
    assert {c: len(v) for c, v in _random_holdout({'a': ['x', 'y']}, 0.9, 0)[1].items()} == {'a': 1}
    assert _holdout_note(train, valid, 0) == ("no valid/ folder: 8 of 27 images (29.6%) are held out for validation, "
                                              "at random from each class (seed 0)")
    with pytest.raises(ValueError, match=r"class 'z' has 1 image: a random 20% of each class is held out"):
        _random_holdout({**by_class, 'z': ['z0']}, 0.2, 0)


def test_names_as_text_and_inside_a_folder():
    assert display_name('caf\udce9') == 'caf\\xe9' and display_name('café') == 'café'   # Latin-1 byte vs UTF-8
    assert _inside('/a/b', '/a/b') and _inside('/a/b/c', '/a/b') and _inside('/a/b/c', '/a/b/')
    assert not _inside('/a/bc', '/a/b') and not _inside('/a', '/a/b')

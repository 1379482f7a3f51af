"model/config.py: ResNetXConfig from a dict, a YAML file and back, and the words of each refusal."
import pytest
from fastai_resnetx.model.config import ResNetXConfig


def test_a_config_file_round_trip(tmp_path):
    cfg = ResNetXConfig((2, 2), 'basic', (8, 16), strides=(1, 2), stem='small', fold=2)
    d = cfg.to_dict()
    assert d['num_units'] == [2, 2] and d['widths'] == [8, 16] and d['strides'] == [1, 2]   # lists: YAML-friendly
    import yaml
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(d))
    assert ResNetXConfig.from_yaml(tmp_path / 'c.yaml') == cfg
    assert ResNetXConfig.from_yaml(tmp_path / 'c.yaml', fold=1).fold == 1 and cfg.replace(n_out=3).num_classes == 3


def test_the_words_of_a_bad_config_file(tmp_path):
    p = tmp_path / 'c.yaml'
    def words(text):
        "The refusal of a config file holding `text` (None: no file), less the file's name at its start."
        if text is not None: p.write_text(text)
        with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
        assert str(e.value).startswith(f"config file {str(p)!r}")
        return str(e.value)[len(f"config file {str(p)!r}"):]
    assert words(None) == " does not exist"
    assert words('a: [1, 2\n').startswith(" is not valid YAML: while parsing a flow sequence")
    assert words('- 1\n- 2\n') == " must hold a mapping, got list"
    assert words('fold: 0\n').startswith(": `fold` must be")
    assert words('folds: 2\n').startswith(": unknown ResNetX config keys ['folds']; allowed: ['act', ")
    p.write_text('')
    assert ResNetXConfig.from_yaml(p) == ResNetXConfig()                        # an empty file: the defaults


@pytest.mark.parametrize('kw, words', [
    (dict(widths=(64, 128)), "`widths` (64, 128) and `strides` (1, 2, 2, 2) need one entry per stage of `num_units` "
                             "(3, 4, 6, 3)"),
    (dict(strides=(1, 2)), "`widths` (256, 512, 1024, 2048) and `strides` (1, 2) need one entry per stage of "
                           "`num_units` (3, 4, 6, 3)"),
    (dict(stem='tiny'), "`stem` must be one of ['resnet', 'deep', 'small'], got 'tiny'"),
    (dict(stem_width=0), "`stem_width` must be an integer >= 1, got 0"),
    (dict(stage_local='yes'), "`stage_local` must be one of [True, False], got 'yes'"),
    (dict(shortcut='pool'), "`shortcut` must be one of ['conv', 'avgpool'], got 'pool'"),
    (dict(num_classes=-1), "`num_classes` must be an integer >= 0, got -1"),
    (dict(in_chans=0), "`in_chans` must be an integer >= 1, got 0"),
    (dict(global_pool='', num_classes=10), "`global_pool=''` (no pooling) needs `num_classes=0` (no classifier), got 10"),
    (dict(zero_init_last_bn='no'), "`zero_init_last_bn` must be one of [True, False], got 'no'"),
    (dict(output_stride=9), "`output_stride` must be one of [8, 16, 32], got 9"),
    (dict(unit_kwargs=[1]), "`unit_kwargs` must be a mapping of keyword arguments, got [1]"),
])
def test_each_field_is_refused_in_its_own_words(kw, words):
    with pytest.raises(ValueError) as e: ResNetXConfig(**kw)
    assert str(e.value) == words


def test_the_edges_each_field_allows():
    for kw in (dict(stem_width=1), dict(in_chans=1), dict(num_classes=0, global_pool=''), dict(output_stride=8),
               dict(output_stride=16), dict(stage_local=True), dict(shortcut='avgpool'), dict(stem='small')):
        assert all(getattr(ResNetXConfig(**kw), k) == v for k, v in kw.items())


def test_the_plan_reads_the_window():
    # by hand: 8 units, fold 2 inside units 3..6 adds the output two back, outside it the previous one
    cfg = ResNetXConfig((2, 2, 2, 2), 'basic', (64, 128, 256, 512), fold=2, start_id=3, end_id=6)
    assert cfg.plan().sources == (0, 1, 1, 2, 3, 4, 6, 7)


@pytest.mark.parametrize('stem, output_stride, strides, dilations', [
    ('resnet', 32, (1, 2, 2, 2), (1, 1, 1, 1)),
    ('resnet', 16, (1, 2, 2, 1), (1, 1, 1, 2)),      # the stem's 4, then 8, 16: the last stage dilates
    ('resnet', 8, (1, 2, 1, 1), (1, 1, 2, 4)),
    ('small', 8, (1, 2, 2, 2), (1, 1, 1, 1))])      # the small stem keeps full size: 1, 1, 2, 4, 8
def test_stage_strides_by_hand(stem, output_stride, strides, dilations):
    assert ResNetXConfig(stem=stem, output_stride=output_stride).stage_strides() == (strides, dilations)

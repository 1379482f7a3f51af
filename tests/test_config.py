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
    with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
    assert str(e.value) == f"config file {str(p)!r} does not exist"
    p.write_text('a: [1, 2\n')
    with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
    assert str(e.value).startswith(f"config file {str(p)!r} is not valid YAML: while parsing a flow sequence")
    p.write_text('- 1\n- 2\n')
    with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
    assert str(e.value) == f"config file {str(p)!r} must hold a mapping, got list"
    p.write_text('fold: 0\n')
    with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
    assert str(e.value).startswith(f"config file {str(p)!r}: `fold` must be")
    p.write_text('folds: 2\n')
    with pytest.raises(ValueError) as e: ResNetXConfig.from_yaml(p)
    assert str(e.value).startswith(f"config file {str(p)!r}: unknown ResNetX config keys ['folds']; allowed: ['act', ")
    p.write_text('')
    assert ResNetXConfig.from_yaml(p) == ResNetXConfig()                        # an empty file: the defaults

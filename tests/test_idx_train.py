"`resnetx train` on an idx data set, end to end: the exported learner predicts image files as the model does."
import numpy as np
import pytest
import torch
from PIL import Image

from test_idx_data import write_idx_set


@pytest.mark.slow
def test_train_on_idx_folder_then_predict_image_files(tmp_path, capsys):
    "Through the front door in process (test_cli runs `python -m fastai_resnetx` and the console script as processes)."
    from resnetx_cli import main
    # 12 classes: fastai would sort their names ('0', '1', '10', '11', '2', ...) away from the model's output order
    arrays = write_idx_set(tmp_path / 'data', n_train=96, n_test=24, size=(28, 28), n_classes=12, gz=False)
    out = tmp_path / 'run'
    code = main(['train', '--data', str(tmp_path / 'data'), '--epochs', '1', '--bs', '16', '--out', str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert 'final test accuracy' in printed.out and '(24 images)' in printed.out
    assert (out / 'export.pkl').stat().st_size < 5 * 2**20          # the model, not the data set
    from fastai.learner import load_learner
    learn = load_learner(out / 'export.pkl')
    model = learn.model.eval()
    train = arrays['train_images'].astype(np.float64) / 255        # normalised by hand with the training set's stats
    mean, std = train.mean(), train.std(ddof=1)
    x = torch.tensor((arrays['test_images'] / 255 - mean) / std, dtype=torch.float32)[:, None]
    with torch.no_grad(): want = model(x).argmax(1).tolist()
    got = []
    for i, img in enumerate(arrays['test_images']):
        Image.fromarray(img).save(tmp_path / f'{i}.png')
        with learn.no_bar(): got.append(learn.predict(tmp_path / f'{i}.png')[0])
    assert got == [str(c) for c in want]

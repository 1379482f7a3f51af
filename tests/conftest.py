import os
os.environ.setdefault('MPLBACKEND', 'Agg')   # tests draw plots without a screen
import torch

# the suite runs as 2 pytest-xdist workers on 2 cores: one torch thread each avoids oversubscription
if os.environ.get('PYTEST_XDIST_WORKER'): torch.set_num_threads(1)

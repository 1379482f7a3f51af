"`python -m fastai_resnetx ...` runs the `resnetx` command (as torchrun and accelerate launch need)."
import sys
from resnetx_cli import main

if __name__ == '__main__': sys.exit(main())

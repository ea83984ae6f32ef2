"""``python -m kraken.train ARGS`` is ``kraken train ARGS``: the entry point for torchrun.

::

    torchrun --nproc-per-node 4 -m kraken.train --config run.toml --resume

An entry point, like ``kraken.cli`` (level 5): it only hands its arguments to the CLI.
"""

import sys

from kraken.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

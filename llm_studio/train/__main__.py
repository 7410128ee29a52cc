"""`python -m llm_studio.train CONFIG [--name N] [--set key=value]... | --resume N` (what workers run).

The same command as `llm-studio train`, with the same flags and exit codes (0 finished or stopped,
1 failed, 2 a request that could not start). `--debug` shows tracebacks.
"""

import sys

from llm_studio.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    debug = ["--debug"] if "--debug" in argv else []
    sys.exit(main([*debug, "train", *[a for a in argv if a != "--debug"]]))

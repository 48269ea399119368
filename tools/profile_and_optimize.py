#!/usr/bin/env python3
"""ELL-compatible entry point: the same as `layertune profile-and-optimize`.

    python tools/profile_and_optimize.py --model_path DIR --target pi3 --output_path OUT
"""

import sys

from layertune.cli import main

if __name__ == "__main__":
    sys.exit(main(["profile-and-optimize", *sys.argv[1:]]))

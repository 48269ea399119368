#!/usr/bin/env python3
"""Rebuilds the bundled example examples/digits/: a small CNN trained on scikit-learn's digits,
saved as digits_cnn.keras and digits_cnn.tflite (needs TensorFlow and scikit-learn:
pip install 'layertune[test]')."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from layertune.examples import digits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent.parent / "examples" / "digits"))
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits.load_split()
    model = digits.train_cnn(x_train, y_train, epochs=args.epochs)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    for name, write in (("digits_cnn.keras", lambda p: model.save(p)),
                        ("digits_cnn.tflite", lambda p: p.write_bytes(digits.to_tflite(model)))):
        tmp = out / f".{name}.tmp{Path(name).suffix}"
        write(tmp)
        os.replace(tmp, out / name)
    print(f"test accuracy {accuracy:.3f}; wrote {out / 'digits_cnn.keras'} and {out / 'digits_cnn.tflite'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the files that ship with layertune are: inside the installed package, or — when the
package runs from a source checkout — at the checkout's top level, where the repository keeps
them (profile_options/, csrc/ + CMakeLists.txt)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parents[1]  # src/layertune -> the repository's top level


def shipped(installed: str, in_checkout: str, what: str) -> Path:
    """PACKAGE/installed if it exists, else CHECKOUT/in_checkout; FileNotFoundError naming
    `what` otherwise."""
    for candidate in (PACKAGE / installed, CHECKOUT / in_checkout):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{what} is missing; reinstall layertune with `pip install .`")

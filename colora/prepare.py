"""Convert the bundled GGUF model (and build the tiny test model) into the cache, once.

``python -m colora.prepare`` prints where they are; later loads reuse the cached directories.
"""

from __future__ import annotations

from colora.base_model import bundled_model_dir, tiny_model_dir


def main() -> None:
    print(f"bundled model: {bundled_model_dir()}")
    print(f"tiny test model: {tiny_model_dir()}")


if __name__ == "__main__":
    main()

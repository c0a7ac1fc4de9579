"""The built-in demo lab: synthetic text domains, a tiny Llama-shaped model trained from scratch on
CPU, one LoRA expert per domain, and LoRA models truly trained on mixtures. See :mod:`mixlab.demo.build`."""

from pathlib import Path

LABS_DIR = Path(__file__).resolve().parents[2] / "cache"  # where the shipped demo labs live
DEMO_LAB = LABS_DIR / "demo-k3"  # the lab the app and the CLI open when none is named

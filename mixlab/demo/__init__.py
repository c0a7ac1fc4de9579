"""The built-in demo lab: synthetic text domains, a tiny Llama-shaped model trained from scratch on
CPU, one LoRA expert per domain, and LoRA models truly trained on mixtures. See :mod:`mixlab.demo.build`."""

from mixlab.lab import LABS_DIR  # where the shipped demo labs live (the lab knows it: exports go beside it)

DEMO_LAB = LABS_DIR / "demo-k3"  # the lab the app and the CLI open when none is named

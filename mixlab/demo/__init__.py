"""The built-in demo lab: synthetic text domains, a tiny Llama-shaped model trained from scratch on
CPU, one LoRA expert per domain, and LoRA models truly trained on mixtures. See :mod:`mixlab.demo.build`."""

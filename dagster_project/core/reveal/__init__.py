"""Reveal-and-Release (arXiv 2509.14624): the model reveals what it knows about a subject, then unlearns it."""

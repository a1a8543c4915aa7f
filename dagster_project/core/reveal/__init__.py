"""Reveal-and-Release (METHODS.md §3): the model reveals what it knows about a subject, then unlearns it."""

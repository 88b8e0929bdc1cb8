"""Guardrails: checks on a request's input before the provider call and on its output after it (issue 18)."""

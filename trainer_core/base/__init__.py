"""Foundations every layer may use: atomic file writes, threads, the error base class."""

"""Presets: the typed dataclasses, validation, YAML load/save, and preset -> TRL/PEFT arguments."""

"""Models: loading, inspection on the meta device, the offline registry, LoRA targets, image tokens, hub access."""

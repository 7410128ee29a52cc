"""Export a trained experiment as a plain Hugging Face model folder (merged, safetensors, model card)."""

"""Any PyTorch network: a model SPEC (built-in or the user's own file) resolved to a model, its
batches and a loss, and the per-layer factors H and Delta of every linear layer's gradient."""

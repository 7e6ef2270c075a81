"""The networks: the SPEC registry, autograd capture, the two-layer network, the deep MLP, MiniLM."""

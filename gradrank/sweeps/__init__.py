"""Many runs: the sweep spec, its store, the executors."""

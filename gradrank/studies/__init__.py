"""What a command studies: analyze, layers, train, onestep, regpath, scaling, advise, theory."""

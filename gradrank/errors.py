"""The one exception type for bad user input: the CLI turns it into exit code 2."""


class InputError(ValueError):
    """Bad config value, bad file or bad option; the message names the field or file."""

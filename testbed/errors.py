"""User errors in a run's inputs, each one line naming the file, dataset, path or name: every command prints it
and exits with code 2 (cli.py). Defined apart from the modules that raise them, so that the command line can
catch them without loading torch."""


class DataError(ValueError):
    """A user error in the data: the message is one line naming the file or dataset."""


class ModelError(ValueError):
    """A user error loading a model or tokenizer: one line naming the path or name."""

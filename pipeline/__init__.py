"""cnncodes: cached CNN codes, classical heads, fine-tuning and one honest report."""

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, exit code 2, no traceback."""

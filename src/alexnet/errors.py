"""User-facing errors: the CLI prints these as one line on stderr and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a missing file, a wrong option, a mismatched checkpoint)."""

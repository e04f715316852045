"""Errors raised while reading the infra docs or resolving a credential."""


class DocsError(ValueError):
    """A document of the infra repo cannot be used at all.

    Problems with single rows are not errors: they are reported as
    ``DocumentProblem`` entries and the rest of the document is still used.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class InventoryFormatError(DocsError):
    """The system inventory is missing, unreadable or contains no inventory table."""


class CredentialError(Exception):
    """A credential pointer cannot be resolved to a secret.

    The message names the pointer and where it points, never the secret value.
    """

    def __init__(self, pointer_name: str, message: str) -> None:
        super().__init__(f"credential {pointer_name!r}: {message}")
        self.pointer_name = pointer_name
        self.message = message

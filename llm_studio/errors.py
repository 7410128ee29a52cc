"""Project exceptions. Each becomes one clear line at the CLI and UI edges; logs keep the traceback."""


class LLMStudioError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(LLMStudioError):
    """An experiment config is invalid. `problems` lists (field path, reason) for every bad field."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"  {path}: {reason}" for path, reason in problems]
        super().__init__(f"invalid config{where}:\n" + "\n".join(lines))


class DatasetError(LLMStudioError):
    """A dataset file cannot be imported. Names the file, the 1-based row and the column where known."""

    def __init__(self, message: str, file: str | None = None, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class StoreError(LLMStudioError):
    """The store could not complete an operation (not found, name taken, database newer than the code...)."""


class NotFoundError(StoreError):
    """A named dataset or experiment does not exist."""


class NameTakenError(StoreError):
    """A dataset or experiment name is already used."""

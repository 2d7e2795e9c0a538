"""Request bodies of the OpenAI-compatible routes, validated by pydantic (bad input -> HTTP 400).

Every field is typed strictly (a string is not a number, `true` is not 1) and bounded: numbers are finite
and in range, strings and lists have a largest size. Limits that an operator may want to change are
ServeConfig keys checked by the routes; the fixed ones are here.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

# OpenAI's own limits on stop sequences: each one is checked against the text after every token.
MAX_STOPS = 4
MAX_STOP_CHARS = 64
# Names and ids are short; a longer one is an attack or a mistake, never a model or a file.
MAX_NAME_CHARS = 256
MAX_ID_CHARS = 64
# Fine-tuning: enough for any real run, small enough that a job cannot occupy the trainer for days.
MAX_EPOCHS = 100
MAX_BATCH_SIZE = 256
MAX_LR_MULTIPLIER = 100
SEED_LIMIT = 2**63  # seeds are int64 in torch and numpy
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Id = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
Auto = Literal["auto"]


def quoted(value: Any, limit: int = 40) -> str:
    """A request value as a message may quote it: a string as Python quotes it, the rest as JSON; cut short."""
    try:
        text = repr(value) if isinstance(value, str) else json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):  # not JSON, or an integer too long to print
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def explained(rule: str, auto: bool = False) -> WrapValidator:
    """One error saying what the field takes, instead of pydantic's one error per member of a union.

    With `auto`, a number is told what is wrong with it, and anything else that 'auto' is also allowed.
    """

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            infinite = isinstance(value, float) and not math.isfinite(value)  # ints are finite, however long
            what = rule if not auto or _is_number(value) else f"'auto' or {rule}"
            message = "should be {what} (not inf or NaN), got {got}" if infinite else "should be {what}, got {got}"
            raise PydanticCustomError("invalid_value", message, {"what": what, "got": quoted(value)}) from None

    return WrapValidator(check)


class StrictBody(BaseModel):
    # Unknown OpenAI fields (logprobs, user, ...) are accepted and ignored, as the official server does.
    model_config = ConfigDict(extra="ignore", strict=True)


# -- chat completions ----------------------------------------------------------------------------------
StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = Annotated[
    StopText | Annotated[list[StopText], Field(max_length=MAX_STOPS)] | None,
    explained(f"a string or a list of at most {MAX_STOPS} strings, each 1 to {MAX_STOP_CHARS} characters"),
]


class Message(StrictBody):
    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(StrictBody):
    include_usage: bool = False


class Sampling(StrictBody):
    """How an answer is sampled: chat completions and conversation turns take the same settings."""

    model: Name
    stream_options: StreamOptions | None = None
    # The upper bound is serve.max_tokens_limit, checked by the route.
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    stop: Stop = None
    seed: Seed | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


# -- conversations -------------------------------------------------------------------------------------
MAX_TITLE_CHARS = 200
Title = Annotated[str, Field(max_length=MAX_TITLE_CHARS)]


class ConversationRequest(StrictBody):
    title: Title | None = None  # none (or blank): titled by its first question
    model: Name | None = None


class ConversationPatch(StrictBody):
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)]


class TurnRequest(Sampling):
    # How long: serve.max_request_bytes; a blank one is refused by the route.
    question: str
    stream: bool = True


# -- embeddings ----------------------------------------------------------------------------------------
class EmbeddingsRequest(StrictBody):
    model: Name
    # How many inputs and how long each: serve.max_embedding_inputs and serve.max_embedding_chars (route).
    input: Annotated[str | list[str], explained("a string or a list of strings")]
    # The official client asks for base64 (packed little-endian float32) and decodes it itself.
    encoding_format: Literal["float", "base64"] = "float"


# -- fine-tuning jobs ----------------------------------------------------------------------------------
Epochs = Annotated[
    Auto | Annotated[float, Field(gt=0, le=MAX_EPOCHS, allow_inf_nan=False)],
    explained(f"a number > 0 and <= {MAX_EPOCHS}", auto=True),
]
BatchSize = Annotated[
    Auto | Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)],
    explained(f"a whole number in 1..{MAX_BATCH_SIZE}", auto=True),
]
Multiplier = Annotated[
    Auto | Annotated[float, Field(gt=0, le=MAX_LR_MULTIPLIER, allow_inf_nan=False)],
    explained(f"a number > 0 and <= {MAX_LR_MULTIPLIER}", auto=True),
]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n_epochs: Epochs = "auto"
    batch_size: BatchSize = "auto"
    learning_rate_multiplier: Multiplier = "auto"


class Supervised(StrictBody):
    hyperparameters: Hyperparameters = Hyperparameters()


class Method(StrictBody):
    type: Annotated[str, Field(max_length=MAX_ID_CHARS)]
    supervised: Supervised | None = None


class JobRequest(StrictBody):
    # integrations, metadata: accepted and ignored (extra="ignore")
    training_file: Id
    model: Name
    hyperparameters: Hyperparameters = Hyperparameters()
    method: Method | None = None
    suffix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    seed: Seed | None = None
    validation_file: Id | None = None


# -- files ---------------------------------------------------------------------------------------------
class FileUpload(BaseModel):
    """The multipart form of POST /v1/files: read by files.py as it streams, declared here for the schema."""

    # The name is kept (the client knows its file by it) and its suffix tells the format: .jsonl, .json, .txt, .md.
    file: Annotated[bytes, Field(json_schema_extra={"format": "binary"})]
    purpose: Literal["fine-tune"]

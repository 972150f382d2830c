"""Wire schemas of the HTTP API (pydantic), kept apart from engine parameters.

One request model serves both the Jina and the OpenAI form of ``POST /v1/embeddings``. Unknown
fields are **rejected** (422 naming the field): a misspelt option must never silently change the
vectors. The field names other clients use for the same thing are accepted: ``encoding_type``
(LlamaIndex and others) for ``embedding_type``, and OpenAI's ``encoding_format`` and ``user``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

EmbeddingType = Literal["float", "base64", "binary", "ubinary"]
EncodingFormat = Literal["float", "base64"]

# schema bound; the configured limit (ServerSettings) is usually lower, and a longer list gets the
# same 413 as a list over that limit (server/errors.py)
MAX_ITEMS_HARD = 65_536
MAX_FIELD_CHARS = 256 * 1024 * 1024  # schema bound on one string; the body-size limit is lower
MAX_NAME_CHARS = 512


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 256.0 as an integer; so do we (any other float, and strings, stay
    refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Any integer: the model checks the range (1 … its dimension) with its own invalid_option message.
Dimensions = Annotated[int, BeforeValidator(_whole_number)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TextInput(_Wire):
    """``{"text": "..."}``"""

    text: str = Field(max_length=MAX_FIELD_CHARS)


class ImageInput(_Wire):
    """``{"image": URL | base64 | data URI}``"""

    image: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)


class UrlInput(_Wire):
    """``{"url": URL}``: the Jina API's form of an image given by URL (the same values as
    ``image``)."""

    url: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)


class BytesInput(_Wire):
    """``{"bytes": base64}``: the Jina API's form of an image given as base64 (the same values as
    ``image``)."""

    bytes: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)


class PdfInput(_Wire):
    """``{"pdf": URL | base64 | data URI}``: every page becomes one embedding, in page order."""

    pdf: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)


INPUT_OBJECTS: dict[str, type[_Wire]] = {
    "text": TextInput,
    "image": ImageInput,
    "url": UrlInput,
    "bytes": BytesInput,
    "pdf": PdfInput,
}
ENTRY_ERROR = (
    'each input must be a string or an object with exactly one of "text", "image", "url", '
    '"bytes", "pdf"'
)


def _input_kind(value: Any) -> str | None:
    """The tag of one ``input`` entry: a plain string, or an object with exactly one known key."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, BaseModel):
        return next((key for key, model in INPUT_OBJECTS.items() if type(value) is model), None)
    if isinstance(value, dict):
        keys = [key for key in INPUT_OBJECTS if key in value]
        return keys[0] if len(keys) == 1 else None
    return None


InputEntry = Annotated[
    Annotated[Annotated[str, Field(max_length=MAX_FIELD_CHARS)], Tag("string")]
    | Annotated[TextInput, Tag("text")]
    | Annotated[ImageInput, Tag("image")]
    | Annotated[UrlInput, Tag("url")]
    | Annotated[BytesInput, Tag("bytes")]
    | Annotated[PdfInput, Tag("pdf")],
    Discriminator(
        _input_kind, custom_error_type="invalid_input_entry", custom_error_message=ENTRY_ERROR
    ),
]
InputList = Annotated[list[InputEntry], Field(min_length=1, max_length=MAX_ITEMS_HARD)]
Input = Annotated[
    Annotated[Annotated[str, Field(max_length=MAX_FIELD_CHARS)], Tag("string")]
    | Annotated[InputList, Tag("list")],
    Discriminator(
        lambda value: (
            "string" if isinstance(value, str) else "list" if isinstance(value, list) else None
        ),
        custom_error_type="invalid_input",
        custom_error_message="input must be a string or a non-empty list of inputs",
    ),
]
EmbeddingTypes = Annotated[list[EmbeddingType], Field(min_length=1, max_length=4)]


# The one refused pair of encoding fields, as JSON Schema (the request model's "not"): the OpenAI
# field set to "float" beside a different Jina embedding_type.
ENCODING_CONFLICT = {
    "required": ["encoding_format", "embedding_type"],
    "properties": {
        "encoding_format": {"const": "float"},
        "embedding_type": {"not": {"anyOf": [{"const": "float"}, {"type": "null"}]}},
    },
}


class EmbeddingRequest(_Wire):
    """``POST /v1/embeddings`` (Jina form; the OpenAI form is the subset plus
    ``encoding_format``)."""

    model_config = ConfigDict(json_schema_extra={"not": ENCODING_CONFLICT})

    model: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="A listed model (GET /v1/models): a served name, or a task name such as "
        "jina-embeddings-v4-retrieval-passage that carries its task; omitted = the first served "
        "model.",
    )
    input: Input = Field(
        description=(
            "A string, a list of strings, or a list of {text}, {image}, {url}, {bytes} and {pdf} "
            "objects; a string that is an image (or PDF) data URI is an image (or PDF)."
        ),
    )
    task: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="e.g. retrieval.query, code.passage; "
        "default: the task the model name carries, else the model's default.",
    )
    dimensions: Dimensions | None = Field(
        None, description="Matryoshka size: keep the first N dims (1 … the model's dimension)."
    )
    late_chunking: bool = Field(
        False, description="Treat the inputs as consecutive chunks of one document."
    )
    embedding_type: EmbeddingType | EmbeddingTypes | None = Field(
        None,
        validation_alias=AliasChoices("embedding_type", "encoding_type"),
        description=(
            "float | base64 | binary | ubinary, or a list of them (each item then gets a dict); "
            "also accepted as encoding_type. Wins over encoding_format, except that "
            "encoding_format 'float' beside a different embedding_type is refused."
        ),
    )
    encoding_format: EncodingFormat | None = Field(
        None, description="OpenAI form of embedding_type (float | base64)."
    )
    truncate: bool = Field(False, description="Cut over-long inputs instead of refusing them.")
    normalized: bool = Field(True, description="L2-normalise single vectors.")
    return_multivector: bool = Field(
        False, description="One 'embeddings' list of token vectors per item."
    )
    user: str | None = Field(
        None, max_length=256, description="OpenAI field; accepted and ignored."
    )

    @model_validator(mode="after")
    def _encodings_agree(self) -> EmbeddingRequest:
        if self.encoding_format == "float" and self.embedding_type not in (None, "float"):
            raise ValueError(
                f"encoding_format 'float' contradicts embedding_type {self.embedding_type!r}; give "
                "one of them (embedding_type may stand beside encoding_format 'base64', the openai "
                "client's default)"
            )
        return self

    @property
    def kinds(self) -> str | list[str]:
        """The requested encoding(s); a list gives every item a dict keyed by kind.
        ``embedding_type`` wins over ``encoding_format``: the openai client sends ``base64`` even
        when not asked to, so Jina options in its ``extra_body`` stand beside it (and it passes
        non-string values through)."""
        if self.embedding_type is not None:
            return (
                list(self.embedding_type)
                if isinstance(self.embedding_type, list)
                else self.embedding_type
            )
        return self.encoding_format or "float"

    def raw_inputs(self) -> list[str | dict[str, str]]:
        """``input`` as a list of plain strings and one-key dicts (the form the input parser
        takes)."""
        entries = [self.input] if isinstance(self.input, str) else self.input
        return [entry if isinstance(entry, str) else entry.model_dump() for entry in entries]


class Usage(BaseModel):
    total_tokens: int
    prompt_tokens: int


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(
        description="Position in data: input order, each PDF expanded to its pages in place."
    )
    embedding: Any = Field(None, description="Single vector in the requested encoding(s).")
    embeddings: Any = Field(
        None, description="Multi-vector (return_multivector): one encoding per token."
    )


class EmbeddingResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    usage: Usage
    data: list[EmbeddingData]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "uniembed"
    root: str = Field(description="The served name of the model behind this name.")
    task: str | None = Field(
        description="The task this name carries (null: the request's, else default_task)."
    )
    default_task: str | None = Field(
        description="The task a request to this name gets when it sends none."
    )
    info: dict[str, Any] = Field(description="dimensions, tasks, context length, modalities …")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str = Field(
        description="invalid_request_error | authentication_error | rate_limit_error | server_error"
    )
    param: str | None = Field(
        None, description="The request field at fault, when known (e.g. dimensions, input.3)."
    )
    code: str = Field(
        description=(
            "One code per kind of flaw, e.g. invalid_json, invalid_request, input_too_large."
        )
    )


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error body: OpenAI's ``error`` and Jina's ``detail`` (the message, or the list of
    schema violations)."""

    error: ErrorDetail
    detail: str | list[ValidationIssue]

"""Request and response bodies of the HTTP API (docs/http-api.md), as pydantic models.

Requests take the same fields as JSON or as multipart form values. `inputs` is text for text
models and base64/data: URIs of file bytes for image and audio models; a single string is a list of
one. Text models also take token ids, as OpenAI's embeddings API does: a list of integers is one
input, a list of lists of integers several (each the model's whole input, <s> and </s> included;
JSON only, a multipart form's values are strings). `/transcribe` takes audio as `/embed` does;
`/v1/audio/transcriptions` and `/v1/models` have OpenAI's shapes.

The routes take the request models as typed parameters and FastAPI writes /openapi.json from them:
the shapes `inputs` takes come from its annotation (a discriminated union), the multipart forms of
the JSON bodies from the same models (`multipart_schema`), the form of `/v1/audio/transcriptions`
from its model, whose `Upload` field a form's file fills. They return the response
models, which FastAPI validates, except the embeddings of /embed and /v1/embeddings: dicts of numpy
arrays rendered by orjson, documented by `EmbedResponse` and `OpenAIEmbeddingResponse` (validating
64 x 768 floats through pydantic costs about 6x the CPU of the orjson path). The tests hold every
response to the document.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictInt,
    Tag,
    field_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from d2v.model.modality import Modality

__all__ = [
    "ClassifyRequest", "ClassifyResponse", "EmbedRequest", "EmbedResponse", "ErrorResponse", "HealthResponse",
    "ModelsResponse", "OpenAIEmbeddingRequest", "OpenAIEmbeddingResponse", "OpenAIModel", "OpenAIModelsResponse",
    "OpenAITranscriptionRequest", "OpenAITranscriptionResponse", "ReadyResponse", "TranscribeRequest",
    "TranscribeResponse", "Upload", "checked_later", "multipart_schema",
]

Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""`top_k`, `dimensions`: a positive integer, bounded so that every integer the document allows parses
(pydantic refuses integers past 64 bits as malformed); far beyond any model's labels or width."""


def _json_integer(v: object) -> object:
    """A token id as JSON Schema counts integers: `7`, but also `7.0` or `7e3` (and integers past 64
    bits, which the JSON parser reads as floats), so that the server takes what its document allows.
    Anything else is left for StrictInt to refuse (a string, a bool, 7.5)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _is_token_id(v: object) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def checked_later(**keywords: Any) -> Any:
    """Constraints the document states that the server checks after validation, where it can say
    more: the decoder names the input (an empty token-id list, an id outside the vocabulary: 400), the
    count check covers a form's uploads too ("no inputs": 422). As pydantic field metadata, they
    appear in the JSON schema without being validated there."""
    return Field(json_schema_extra=keywords)


TokenId = Annotated[StrictInt, BeforeValidator(_json_integer), checked_later(minimum=0)]
TokenIds = Annotated[list[TokenId], checked_later(minItems=1),
                     Field(description="token ids (text models): the model's whole input")]


def _text_or(other: str) -> Callable[[object], str]:
    """A discriminator: "text" for a string, else `other`."""
    return lambda v: "text" if isinstance(v, str) else other


def _inputs_shape(v: object) -> str:
    """Which form of `inputs` a value has: one string, one list of token ids, or a list of inputs."""
    if isinstance(v, str):
        return "text"
    return "ids" if isinstance(v, list) and v and all(_is_token_id(i) for i in v) else "list"


def _as_list(v: str | list) -> list:
    """One input (a string, a non-empty list of token ids) -> a list of one; a list of inputs as it is."""
    return [v] if isinstance(v, str) or (v and all(isinstance(i, int) for i in v)) else v


Input = Annotated[Annotated[str, Tag("text")] | Annotated[TokenIds, Tag("ids")], Discriminator(_text_or("ids"))]
"""One input: a string, or (text models) a list of token ids."""
Inputs = Annotated[
    Annotated[str, Tag("text")] | Annotated[TokenIds, Tag("ids")]
    | Annotated[list[Input], checked_later(minItems=1), Tag("list")],
    Discriminator(_inputs_shape), AfterValidator(_as_list)]
"""What `inputs` / `input` take: one string, one list of token ids, or a non-empty list of strings and
token-id lists; validated as a list of inputs."""


class _Addressed(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="a loaded model's name; optional when 'modality' picks one")
    modality: Modality | None = Field(None, description="picks that modality's default model")
    inputs: Inputs = Field(description="text strings or token-id lists (text models), or base64 / data: URIs of "
                           "files (JSON: required; multipart: strings, with or instead of 'file' uploads)")
    truncate: bool = Field(True, description="cut text longer than the model's limit (else 413)")


class EmbedRequest(_Addressed):
    normalize: bool = Field(True, description="L2-normalize, after truncation to 'dimensions'")
    pooling: Literal["mean", "cls"] | None = Field(None, description="default: the model's own")
    dimensions: Count | None = Field(None, description="keep the first N dimensions")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")


class ClassifyRequest(_Addressed):
    top_k: Count = 5


AudioInputs = Annotated[Annotated[str, Tag("text")] | Annotated[list[str], checked_later(minItems=1), Tag("list")],
                        Discriminator(_text_or("list")), AfterValidator(_as_list)]
"""What `/transcribe`'s `inputs` take: one string or a non-empty list of them (never token ids)."""


class TranscribeRequest(BaseModel):
    """Speech to text with a CTC model: audio files as base64 or data: URIs (JSON), or `file`
    uploads and `inputs` values (multipart)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="a loaded speech recognizer's name (a model with a CTC head); "
                              "default: the first one loaded")
    inputs: AudioInputs = Field(description="base64 / data: URIs of audio files (WAV, FLAC, "
                                "OGG, ...; any rate from 1 to 192 kHz; JSON: required; multipart: with or instead of "
                                "'file' uploads)")


class Transcript(BaseModel):
    index: int
    text: str = Field(description="greedy CTC transcript: words separated by single spaces (empty: no speech "
                      "recognized)")


class TranscribeUsage(BaseModel):
    inputs: int
    seconds: float = Field(description="duration of the audio received, summed over the inputs")


class TranscribeResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Transcript]
    usage: TranscribeUsage


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart form, read: its bytes and the content type the part declared (None:
    a plain form value, taken as its UTF-8 bytes). As a request model's field type, a form fills it:
    the server's form reader hands the field every part of its name, read, and the field says how many
    it takes; the document shows it as a binary string (a file)."""

    data: bytes
    content_type: str | None = None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}


def _form_value(prop: dict[str, Any]) -> dict[str, Any]:
    """One field's JSON schema as a multipart form value: no null (a form cannot send one), and an
    empty value standing for the field left out (as HTML forms send them). Uploads stay as they are."""
    if prop.get("format") == "binary":
        return prop
    description = prop.get("description", "")
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    options = [{k: v for k, v in o.items() if k not in ("default", "title", "description")} for o in options]
    return {"anyOf": [*options, {"const": ""}], "description": f"{description} (empty: left out)".strip()}


def _as_form(schema: dict[str, Any]) -> None:
    """The `json_schema_extra` of a request model taken only as a multipart form: its fields as form
    values."""
    schema["properties"] = {name: _form_value(prop) for name, prop in schema["properties"].items()}


class OpenAITranscriptionRequest(BaseModel):
    """The multipart form of OpenAI's `POST /v1/audio/transcriptions`, as far as d2v takes it: one
    audio `file`, `model`, `response_format`. `language`, `prompt` and `temperature` are accepted and
    ignored: greedy CTC decoding has no language switch, no prompt and no sampling."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra=_as_form)

    file: Upload = Field(description="the audio file (WAV, FLAC, OGG, ...)")
    model: str | None = Field(None, description="a loaded speech recognizer's name; default: the first one loaded")
    response_format: Literal["json", "text"] = Field("json", description="json: {\"text\": ...}; text: the "
                                                     "transcript as text/plain")
    language: str | None = Field(None, description="ignored")
    prompt: str | None = Field(None, description="ignored")
    temperature: float | None = Field(None, ge=0, le=1, description="ignored (greedy decoding)")

    @field_validator("file", mode="before")
    @classmethod
    def _one_file(cls, parts: object) -> object:
        """A form's `file` parts (a list): exactly one."""
        if isinstance(parts, list):
            if len(parts) != 1:
                raise PydanticCustomError("one_file", "send one audio file as 'file' (got {count}); /transcribe "
                                          "takes several", {"count": len(parts)})
            return parts[0]
        return parts


class OpenAITranscriptionResponse(BaseModel):
    text: str


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input: Inputs = Field(description="text or token ids (a list of integers, or a list of such lists), or "
                          "base64 / data: URIs with 'modality'")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Count | None = None
    user: str | None = None
    modality: Modality | None = Field(None, description="d2v extension: 'image' or 'audio' data URIs")


class Embedding(BaseModel):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] | None = None


class EmbedResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    modality: Modality
    data: list[Embedding]
    usage: dict[str, int]


class Prediction(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    index: int
    predictions: list[Prediction]


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    modality: Modality
    data: list[Classification]
    usage: dict[str, int]


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, int]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    models: dict[str, str] = Field(description="each model: 'ok'")


class ReadyResponse(BaseModel):
    status: Literal["ready"]


class ModelInfo(BaseModel):
    name: str
    modality: Modality
    dimensions: int
    labels: list[str] | None
    pooling: str
    backend: str
    device: str
    path: str = Field(description="the model directory's name (not its path on the server)")
    kernels: dict[str, str] | None = Field(None, description="PyTorch models: what each accelerated op runs on "
                                           "('reference', 'triton', or 'reference (fallback: why)' when the Triton "
                                           "kernel differed from the reference at its first CUDA call)")
    tasks: list[Literal["embed", "classify", "transcribe"]] = Field(
        default_factory=lambda: ["embed"], description="what the model answers: /embed always, /classify with a "
        "classification head, /transcribe with a CTC head")


class ModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class OpenAIModel(BaseModel):
    id: str = Field(description="the model's name")
    object: Literal["model"] = "model"
    created: int = Field(description="when the model directory was written (Unix seconds)")
    owned_by: str = Field(description="always 'd2v'")


class OpenAIModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def multipart_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The multipart/form-data form of a request body: its fields as form values (`inputs` repeated),
    `file` uploads, and an empty value standing for a field left out (as HTML forms send them). A form
    needs something to embed: a non-empty `inputs` value or a `file` (else the server answers 422
    "no inputs", as for JSON's required `inputs`)."""
    props: dict[str, Any] = {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                      "description": "files (images, audio, UTF-8 text)"},
                             **{name: _form_value(prop) for name, prop in
                                schema.model_json_schema()["properties"].items()}}
    props["inputs"] = {"type": "array", "items": {"type": "string"},
                       "description": schema.model_fields["inputs"].description or ""}
    something = [{"required": ["inputs"], "properties": {"inputs": {"contains": {"type": "string", "minLength": 1}}}},
                 {"required": ["file"], "properties": {"file": {"minItems": 1}}}]
    return {"type": "object", "properties": props, "additionalProperties": False, "anyOf": something}

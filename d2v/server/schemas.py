"""Request and response bodies of the HTTP API (docs/http-api.md), as pydantic models.

Requests take the same fields as JSON or as multipart form values. `inputs` is text for text
models and base64/data: URIs of file bytes for image and audio models; a single string is a list of
one. Responses are built as plain dicts on the hot path; the models here document them in /docs and
/openapi.json, which the tests hold every response to.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

__all__ = [
    "ClassifyRequest", "ClassifyResponse", "EmbedRequest", "EmbedResponse", "ErrorResponse", "HealthResponse",
    "ModelsResponse", "OpenAIEmbeddingRequest", "OpenAIEmbeddingResponse", "ReadyResponse", "multipart_schema",
]

Modality = Literal["image", "audio", "text"]

STRINGS_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string"},
                                            {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
"""What `inputs` / `input` take: one string, or a non-empty list of them."""
Strings = Annotated[list[str], WithJsonSchema(STRINGS_SCHEMA)]


def _listify(v: object) -> object:
    return [v] if isinstance(v, str) else v


class _Addressed(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="a loaded model's name; optional when 'modality' picks one")
    modality: Modality | None = Field(None, description="picks that modality's default model")
    inputs: Strings = Field(default_factory=list, description="text strings, or base64 / data: URIs of files "
                            "(JSON: required; multipart: with or instead of 'file' uploads)")
    truncate: bool = Field(True, description="cut text longer than the model's limit (else 413)")

    _inputs_list = field_validator("inputs", mode="before")(_listify)


class EmbedRequest(_Addressed):
    normalize: bool = Field(True, description="L2-normalize, after truncation to 'dimensions'")
    pooling: Literal["mean", "cls"] | None = Field(None, description="default: the model's own")
    dimensions: Annotated[int, Field(ge=1)] | None = Field(None, description="keep the first N dimensions")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")


class ClassifyRequest(_Addressed):
    top_k: Annotated[int, Field(ge=1)] = 5


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input: Strings = Field(description="text, or base64 / data: URIs with 'modality'")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    modality: Modality | None = Field(None, description="d2v extension: 'image' or 'audio' data URIs")

    _input_list = field_validator("input", mode="before")(_listify)


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


class ModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def multipart_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The multipart/form-data form of a request body: its fields as form values (`inputs` repeated),
    `file` uploads, and an empty value standing for a field left out (as HTML forms send them)."""
    doc = schema.model_json_schema()
    props: dict[str, Any] = {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                      "description": "files to embed or classify (images, audio, UTF-8 text)"}}
    for name, prop in doc["properties"].items():
        if name == "inputs":
            props[name] = {"type": "array", "items": {"type": "string"}, "description": prop.get("description", "")}
            continue
        description = prop.get("description", "")
        options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]  # no null in a form
        options = [{k: v for k, v in o.items() if k not in ("default", "title", "description")} for o in options]
        props[name] = {"anyOf": [*options, {"const": ""}], "description": f"{description} (empty: left out)".strip()}
    return {"type": "object", "properties": props, "additionalProperties": False}

"""Request and response bodies of the HTTP API (DESIGN.md), as pydantic models.

Requests take the same fields as JSON or as multipart form values. `inputs` is text for text
models and base64/data: URIs of file bytes for image and audio models; a single string is a list of
one. Responses are built as plain dicts on the hot path; the models here document them in /docs.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ClassifyRequest", "ClassifyResponse", "EmbedRequest", "EmbedResponse", "ErrorResponse", "ModelsResponse",
    "OpenAIEmbeddingRequest", "OpenAIEmbeddingResponse",
]

Modality = Literal["image", "audio", "text"]


def _listify(v: object) -> object:
    return [v] if isinstance(v, str) else v


class _Addressed(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="a loaded model's name; optional when 'modality' picks one")
    modality: Modality | None = Field(None, description="picks that modality's default model")
    inputs: list[str] = Field(default_factory=list, description="text strings, or base64 / data: URIs of files")
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

    input: list[str] = Field(description="text, or base64 / data: URIs with 'modality'")
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

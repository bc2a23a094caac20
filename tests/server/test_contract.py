"""The OpenAPI document against the running server: the document it serves is the one the contract
checks of every test use; the places where they once disagreed (/metrics is text; multipart empty
values; `input: []` and a bare string on /v1/embeddings); the token-id forms of text inputs; and a
property-based run (schemathesis) of generated requests, valid and invalid, against every operation:
no 5xx, every status, media type and body as documented, invalid requests refused, and valid ones
never refused as invalid (before, it found /metrics, the multipart forms of /embed and /classify
(also one with nothing to embed), `input: []`, `top_k` past 64 bits, and token ids written as 7.0 or
past 64 bits, which JSON Schema counts as integers). The server holds a speech recognizer, so the
generated /transcribe and /v1/audio/transcriptions requests reach one."""

import jsonschema_rs
import pytest
import schemathesis
from contract import DRAFT, openapi
from harness import API_KEY
from hypothesis import HealthCheck, Phase, given, settings
from media import b64, spoken
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)


def test_the_served_document_is_the_one_checked(client):
    assert client.get("/openapi.json").json() == openapi()


def request_schema_allows(path: str, body: object, media: str = "application/json") -> bool:
    spec = openapi()
    schema = spec["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
    return jsonschema_rs.validator_for({"$schema": DRAFT, "components": spec["components"], **schema}).is_valid(body)


@pytest.mark.parametrize("body,valid", [
    ({"input": "a small cat"}, True),  # a bare string: the server always took it
    ({"input": ["a small cat", "a dog"]}, True),
    ({"input": []}, False),  # the server answers 422 "no inputs"
    ({}, False),
    ({"input": "x", "colour": "red"}, False),
])
def test_v1_embeddings_documents_what_the_server_takes(client, body, valid):
    assert request_schema_allows("/v1/embeddings", body) == valid
    r = client.post("/v1/embeddings", json={"model": "text", **body} if body else body)
    assert (r.status_code == 200) == valid, r.text
    if not valid:
        assert r.status_code == 422


@pytest.mark.parametrize("path", ["/embed", "/classify"])
def test_json_inputs_document_what_the_server_takes(client, path):
    for body, valid in (({"model": "text", "inputs": "a cat"}, True), ({"model": "text", "inputs": ["a cat"]}, True),
                        ({"model": "text", "inputs": []}, False), ({"model": "text"}, False)):
        assert request_schema_allows(path, body) == valid, body
        assert (client.post(path, json=body).status_code == 200) == valid, body


@pytest.mark.parametrize("body,valid,status", [
    ({"input": [0, 5, 2]}, True, 200),  # one input of token ids
    ({"input": [[0, 5, 2], [0, 7, 9, 2]]}, True, 200),  # several (OpenAI's convention)
    ({"input": ["a small cat", [0, 5, 2]]}, True, 200),  # text and ids together
    ({"input": [0.0, 5, 2e0]}, True, 200),  # JSON integers written as floats are integers
    ({"input": [[0, "5", 2]]}, False, 422),
    ({"input": [[0, 5.5, 2]]}, False, 422),
    ({"input": [[0, True, 2]]}, False, 422),
    ({"input": [[]]}, False, 400),  # the decoder names it: "empty list of token ids"
    ({"input": [0, -1, 2]}, False, 400),  # outside the vocabulary
])
def test_token_ids_are_documented_as_the_server_takes_them(client, body, valid, status):
    """Token ids (text models): the document allows exactly the forms the server decodes; what it
    refuses, the server refuses too (422 for the schema, 400 where the decoder names the input)."""
    for path, field in (("/v1/embeddings", "input"), ("/embed", "inputs"), ("/classify", "inputs")):
        request = {"model": "text", field: body["input"]}
        assert request_schema_allows(path, request) == valid, (path, body)
        r = client.post(path, json=request)
        assert r.status_code == status, (path, r.text)


def test_transcription_bodies_document_what_the_server_takes(client):
    """/transcribe takes audio as /embed does (a string or a non-empty list of strings, never token
    ids); /v1/audio/transcriptions one multipart `file` with OpenAI's fields."""
    clip = b64(spoken("stop"))
    for body, valid in (({"model": "ctc", "inputs": clip}, True), ({"model": "ctc", "inputs": [clip, clip]}, True),
                        ({"inputs": [clip]}, True), ({"model": "ctc", "inputs": []}, False), ({"model": "ctc"}, False),
                        ({"model": "ctc", "inputs": [[0, 5, 2]]}, False), ({"inputs": clip, "pooling": "mean"}, False)):
        assert request_schema_allows("/transcribe", body) == valid, body
        assert (client.post("/transcribe", json=body).status_code == 200) == valid, body
    form = "multipart/form-data"
    assert request_schema_allows("/v1/audio/transcriptions", {"file": "x", "model": "ctc", "response_format": "text",
                                                              "temperature": 0, "language": ""}, form)
    assert not request_schema_allows("/v1/audio/transcriptions", {"model": "ctc"}, form)
    assert not request_schema_allows("/v1/audio/transcriptions", {"file": "x", "response_format": "srt"}, form)
    r = client.post("/v1/audio/transcriptions", data={"model": "", "language": "", "temperature": ""},
                    files=[("file", ("a.wav", spoken("stop"), "audio/wav"))])
    assert r.status_code == 200 and set(r.json()) == {"text"}


@pytest.mark.parametrize("path", ["/embed", "/classify"])
def test_multipart_empty_values_are_fields_left_out(client, path):
    """An HTML form sends its empty fields: they mean 'not given' (the document says so)."""
    form = {"model": "text", "modality": "", "inputs": "", "truncate": "", "top_k": ""} if path == "/classify" \
        else {"model": "text", "modality": "", "inputs": "", "pooling": "", "dimensions": "", "normalize": ""}
    assert request_schema_allows(path, {**form, "inputs": [""], "file": ["a small cat"]}, "multipart/form-data")
    assert not request_schema_allows(path, {**form, "inputs": [""]}, "multipart/form-data")  # nothing to embed
    r = client.post(path, data=form, files=[("file", ("cat.txt", b"a small cat", "text/plain"))])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["inputs"] == 1  # the upload; the empty 'inputs' value was left out
    r = client.post(path, data=form, files=[("unused", ("", b"", "text/plain"))])  # multipart, no file: nothing
    assert r.status_code == 422 and "no inputs" in r.text


def test_metrics_are_documented_as_text(client):
    content = openapi()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


SEMANTIC_422 = ("no CLS token", "dimensions must lie in", "no classification head", "several models are loaded",
                "takes ", "is not a speech recognizer", "is a speech recognizer", "send one audio file")
"""The 422s a well-formed request can get: what it asks is impossible for the model it addresses."""


@schemathesis.check
def valid_requests_are_not_refused_as_invalid(ctx, response, case) -> None:
    """A request the document allows may be refused for its content (400, 404, 413...) or for what it
    asks of a model (the 422s of SEMANTIC_422), never as malformed."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 422:
        return
    message = response.json()["error"]["message"]
    assert any(s in message for s in SEMANTIC_422), f"the document allows this request, the server refused it: " \
                                                   f"{message}"


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, valid_requests_are_not_refused_as_invalid]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_generated_requests(server, mode):
    """Every operation, with generated valid (positive) or invalid (negative) requests, a few each (a
    few seconds per operation): no 5xx, and every answer as documented; invalid requests refused."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} == {"/embed", "/classify", "/transcribe", "/v1/embeddings",
                                              "/v1/audio/transcriptions", "/v1/models", "/v1/models/{model}",
                                              "/models", "/health", "/ready", "/metrics"}
    for op in operations:
        if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
            continue  # nothing to make invalid: no parameters, no body

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60, checks=CHECKS)

        run()


def test_the_contract_check_catches_an_undocumented_answer():
    """The checker itself: a status, a media type or a body shape the document does not list."""
    from contract import Recorded, problems

    assert not problems(Recorded("GET", "/ready", 200, "application/json", b'{"status": "ready"}'))
    assert problems(Recorded("GET", "/ready", 201, "application/json", b'{"status": "ready"}'))
    assert problems(Recorded("GET", "/metrics", 200, "application/json", b"{}"))
    assert problems(Recorded("GET", "/ready", 200, "application/json", b'{"state": "ready"}'))
    assert problems(Recorded("POST", "/embed", 400, "application/json", b'{"detail": "bad"}'))
    assert not problems(Recorded("GET", "/nowhere", 404, "application/json", b"{}"))  # no such operation

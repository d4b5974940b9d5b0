"""The HTTP API's OpenAPI 3.1 document, derived from the samserve.v1 descriptors (so it cannot
drift from the messages the endpoints parse and print; tests check it against the server)."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from samserve.v1 import samserve_pb2 as pb

F = FieldDescriptor
_SCALARS = {
    F.TYPE_DOUBLE: "number",
    F.TYPE_FLOAT: "number",
    F.TYPE_BOOL: "boolean",
    F.TYPE_STRING: "string",
}
_INTEGERS = {
    F.TYPE_INT32,
    F.TYPE_INT64,
    F.TYPE_UINT32,
    F.TYPE_UINT64,
    F.TYPE_SINT32,
    F.TYPE_SINT64,
    F.TYPE_FIXED32,
    F.TYPE_FIXED64,
    F.TYPE_SFIXED32,
    F.TYPE_SFIXED64,
}
# proto3 JSON writes non-finite floats as these strings
_NON_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}

# path -> (RPC, HTTP method, summary); the RPCs' messages are <RPC>Request / <RPC>Response
ROUTES = {
    "/v1/embed": ("Embed", "post", "Embed an image (cached by its bytes and the model); returns its image_id"),
    "/v1/segment": ("Segment", "post", "Masks for point, box and mask prompts on an image or an image_id"),
    "/v1/generate_masks": ("GenerateMasks", "post", "Segment everything (SamAutomaticMaskGenerator)"),
    "/v1/models": ("ListModels", "get", "The models served, the default first named"),
}
# the video tracking service (samserve.v1.VideoTracking): path -> (RPC, summary, request, response)
VIDEO_ROUTES = {
    "/v1/video/start": (
        "StartVideoSession",
        "A tracking session (SAM 2); with `video` (base64) the file's frames",
        "StartVideoSessionRequest",
        "VideoSession",
    ),
    "/v1/video/add_prompt": (
        "AddPrompt",
        "Clicks and/or a box for one object on one frame: every object's mask there",
        "AddPromptRequest",
        "VideoFrameResult",
    ),
    "/v1/video/cancel": (
        "CancelPropagation",
        "Stops the session's running propagation within a frame",
        "VideoSessionRef",
        "VideoSession",
    ),
    "/v1/video/remove_object": (
        "RemoveObject",
        "Removes an object: the frames it was prompted on, without it",
        "RemoveObjectRequest",
        "VideoFrameResults",
    ),
    "/v1/video/clear_prompts": (
        "ClearPrompts",
        "Clears the prompts of a frame and/or an object",
        "ClearPromptsRequest",
        "VideoFrameResults",
    ),
    "/v1/video/reset": (
        "ResetSession",
        "Every object and prompt gone (the frames stay)",
        "VideoSessionRef",
        "VideoSession",
    ),
    "/v1/video/get": (
        "GetSession",
        "The session: frames, objects, bytes held, expiry",
        "VideoSessionRef",
        "VideoSession",
    ),
    "/v1/video/close": ("CloseSession", "Closes the session", "VideoSessionRef", "CloseVideoSessionResponse"),
}
VIDEO_ADD_FRAMES = "/v1/video/add_frames"  # AddFrames: a multipart upload of images (after a 'request' part)
VIDEO_PROPAGATE = "/v1/video/propagate"  # Propagate: PropagateRequest's body, answered as NDJSON
UPLOADS = ("Embed", "Segment", "GenerateMasks")  # take the image as a multipart upload too
EMBED_MANY = "/v1/embed_many"  # EmbedMany: a multipart upload of images, answered as NDJSON
GENERATE_STREAM = "/v1/generate_masks_stream"  # GenerateMasksStream: GenerateMasks' body, answered as NDJSON

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status code"},
                "status": {"type": "string", "description": "the gRPC status name, e.g. INVALID_ARGUMENT"},
                "message": {"type": "string"},
            },
        }
    },
}
HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}},
}


def _field(f: FieldDescriptor, schemas: dict) -> dict:
    if f.type == F.TYPE_MESSAGE:
        _message(f.message_type, schemas)
        one: dict = {"$ref": f"#/components/schemas/{f.message_type.name}"}
    elif f.type == F.TYPE_ENUM:
        names = [v.name for v in f.enum_type.values]
        one = {"anyOf": [{"type": "string", "enum": names}, {"type": "integer"}], "default": names[0]}
    elif f.type == F.TYPE_BYTES:
        one = {"type": "string", "contentEncoding": "base64"}
    elif f.type in _INTEGERS:
        one = {"type": "integer"}
    elif f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        one = {"anyOf": [{"type": "number"}, _NON_FINITE]}
    else:
        one = {"type": _SCALARS[f.type]}
    return {"type": "array", "items": one} if f.is_repeated else one


def _message(d: Descriptor, schemas: dict) -> None:
    if d.name in schemas:
        return
    schemas[d.name] = {}  # placeholder: recursive references terminate
    oneofs = [o for o in d.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional
    schema: dict = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field(f, schemas) for f in d.fields},
    }
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(f.name for f in o.fields)} ({o.name})" for o in oneofs
        )
    schemas[d.name] = schema


def _upload(rpc: str) -> dict:
    return {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "the encoded image file"},
            "request": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": f"the other fields of {rpc}Request as JSON (optional)",
            },
        },
    }


def document(auth: bool, version: str = "1") -> dict:
    schemas: dict = {}
    for name in pb.DESCRIPTOR.message_types_by_name.values():
        _message(name, schemas)
    schemas["Error"] = ERROR
    schemas["Health"] = HEALTH
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    paths: dict = {}
    for path, (rpc, method, summary) in ROUTES.items():
        op: dict = {
            "operationId": rpc,
            "summary": summary,
            "parameters": [
                {
                    "name": "X-Request-Timeout",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "number", "exclusiveMinimum": 0},
                    "description": "the deadline in seconds (gRPC's deadline); past it DEADLINE_EXCEEDED (504)",
                }
            ],
            "responses": {
                "200": {
                    "description": f"{rpc}Response",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{rpc}Response"}}},
                },
                "default": {
                    "description": "the gRPC status as an HTTP code: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, "
                    "404 NOT_FOUND, 408 (body not sent in time), 413 (request over the limit), 429 "
                    "RESOURCE_EXHAUSTED (Retry-After when over capacity), 499 CANCELLED, 500 INTERNAL, "
                    "503 UNAVAILABLE (Retry-After), 504 DEADLINE_EXCEEDED",
                    "content": error,
                },
            },
        }
        if method == "post":
            content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{rpc}Request"}}}
            if rpc in UPLOADS:
                content["multipart/form-data"] = {"schema": _upload(rpc)}
            op["requestBody"] = {"required": False, "content": content}  # empty: every field its default
        if auth:
            op["security"] = [{"bearer": []}]
        paths[path] = {method: op}
    embed_many = {
        "operationId": "EmbedMany",
        "summary": "Pre-embed many images: a JSON line (EmbedManyResult) per image, in order, each with its status",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "request": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "description": "EmbedRequest's other fields (model, return_embedding) for every image",
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "one EmbedManyResult per line (NDJSON)",
                "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/EmbedManyResult"}}},
            },
            "default": {"description": "the request as a whole refused (see the other routes)", "content": error},
        },
    }
    if auth:
        embed_many["security"] = [{"bearer": []}]
    paths[EMBED_MANY] = {"post": embed_many}
    stream = {
        "operationId": "GenerateMasksStream",
        "summary": "GenerateMasks' records in bounded chunks: a GenerateMasksResponse per line (NDJSON); an error "
        "after the first line ends the stream with an Error line",
        "requestBody": paths["/v1/generate_masks"]["post"]["requestBody"],
        "parameters": paths["/v1/generate_masks"]["post"]["parameters"],
        "responses": {
            "200": {
                "description": "one GenerateMasksResponse per line (NDJSON)",
                "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/GenerateMasksResponse"}}},
            },
            "default": paths["/v1/generate_masks"]["post"]["responses"]["default"],
        },
    }
    if auth:
        stream["security"] = [{"bearer": []}]
    paths[GENERATE_STREAM] = {"post": stream}
    for path, (rpc, summary, request, response) in VIDEO_ROUTES.items():
        op = {
            "operationId": rpc,
            "summary": summary,
            "parameters": paths["/v1/segment"]["post"]["parameters"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
            },
            "responses": {
                "200": {
                    "description": response,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}},
                },
                "default": paths["/v1/segment"]["post"]["responses"]["default"],
            },
        }
        if auth:
            op["security"] = [{"bearer": []}]
        paths[path] = {"post": op}
    add_frames = {
        "operationId": "AddFrames",
        "summary": "Appends frames to a video session: a multipart upload, a 'request' part "
        "({\"session_id\": ...}) then the frames as file parts named 'image', in order",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["request", "image"],
                        "properties": {
                            "request": {"type": "string", "contentMediaType": "application/json"},
                            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "VideoSession",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VideoSession"}}},
            },
            "default": paths["/v1/segment"]["post"]["responses"]["default"],
        },
    }
    propagate = {
        "operationId": "Propagate",
        "summary": "Tracks every object of a video session: a VideoFrameResult per line (NDJSON) as each frame is "
        "tracked; an error after the first line ends the stream with an Error line",
        "parameters": paths["/v1/segment"]["post"]["parameters"],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PropagateRequest"}}},
        },
        "responses": {
            "200": {
                "description": "one VideoFrameResult per line (NDJSON)",
                "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/VideoFrameResult"}}},
            },
            "default": paths["/v1/segment"]["post"]["responses"]["default"],
        },
    }
    for op in (add_frames, propagate):
        if auth:
            op["security"] = [{"bearer": []}]
    paths[VIDEO_ADD_FRAMES] = {"post": add_frames}
    paths[VIDEO_PROPAGATE] = {"post": propagate}
    paths["/v1/health"] = {
        "get": {
            "operationId": "Health",
            "summary": "SERVING (200) while Triton's models are ready, else NOT_SERVING (503)",
            "responses": {
                code: {
                    "description": status,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                }
                for code, status in (("200", "SERVING"), ("503", "NOT_SERVING"))
            },
        }
    }
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "samserve",
            "version": version,
            "description": "Segment Anything over HTTP/JSON: the samserve.v1 gRPC API's messages in the proto3 "
            "JSON mapping (field names as in the .proto, bytes as base64, enums by name; the mapping's "
            "lowerCamelCase names are accepted too).",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc

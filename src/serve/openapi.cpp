#include "serve/openapi.h"

namespace gad::serve {

const nlohmann::ordered_json& openapi_document() {
  static const nlohmann::ordered_json doc = nlohmann::ordered_json::parse(R"JSON({
  "openapi": "3.0.3",
  "info": {"title": "gad serve", "version": ")JSON" GAD_VERSION R"JSON(",
    "description": "Generalist anomaly detection (InCTRL) as a service. Register a reference set (K normal images + class name) once, then score images against it. Errors are {\"error\": message}. With a token (--token-file, GAD_TOKEN or --token) every request needs 'Authorization: Bearer <token>', except the probes /healthz and /readyz (and /metrics with --metrics-public). Scores carry 'anomalous' (score > threshold) once the set is calibrated (POST /v1/refsets/{id}/calibrate, or gad refs calibrate before import). Limits (--max-body, --max-pixels, --max-images, --max-k) are checked before any image is decoded; image dimensions come from the file header. Replicas: several servers may share one PostgreSQL store (--db postgresql://...) behind a load balancer; every request reads the set's row, so a change made through one replica is seen by the next request to any other. Every response carries X-Request-Id (the request's own when it is 1-128 characters of letters, digits and -_.:, else a fresh one), also in the --verbose log line. Scoring changes nothing and may be retried; registration and import may be retried with the same Idempotency-Key. A set moves between servers on the same model as a .gadref file (GET /v1/refsets/{id}/export, POST /v1/refsets/import)."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
      "RefSet": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "class": {"type": "string"}, "k": {"type": "integer"},
        "created": {"type": "string", "format": "date-time"}, "fingerprint": {"type": "string"}, "bytes": {"type": "integer"},
        "version": {"type": "integer", "description": "1 when registered; grows by one on every calibration"},
        "threshold": {"type": "number", "description": "only when calibrated (GET of one set, import, replays); with far, method and n as POST .../calibrate answers them"},
        "far": {"type": "number"}, "method": {"type": "string"}, "n": {"type": "integer"}}},
      "ImagesJson": {"type": "object", "properties": {
        "class": {"type": "string", "description": "class name (registration only; required unless the scorer uses none, as AnomalyDINO on DINOv2)"},
        "images": {"type": "array", "items": {"oneOf": [{"type": "string", "format": "byte"},
          {"type": "object", "properties": {"name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}]}}}},
      "ImagesMultipart": {"type": "object", "properties": {
        "class": {"type": "string"}, "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
      "Threshold": {"type": "object", "description": "the same rule and JSON as gad refs calibrate: the ceil((n+1)(1-far))-th smallest of n normal scores (split conformal)", "properties": {
        "refset": {"type": "string"}, "threshold": {"type": "number"}, "far": {"type": "number"},
        "method": {"type": "string", "enum": ["conformal-heldout"]}, "n": {"type": "integer"},
        "warning": {"type": "string", "description": "only when n is too small for far"}}},
      "CalibrateMultipart": {"type": "object", "properties": {
        "far": {"type": "number", "default": 0.05}, "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
      "CalibrateJson": {"type": "object", "properties": {
        "far": {"type": "number", "default": 0.05}, "images": {"type": "array", "items": {"type": "string", "format": "byte"}}}},
      "Score": {"type": "object", "properties": {
        "index": {"type": "integer"}, "name": {"type": "string"}, "score": {"type": "number"}, "s_patch": {"type": "number"},
        "anomalous": {"type": "boolean", "description": "score > the set's threshold; only when calibrated"},
        "s_img": {"type": "number"}, "s_text": {"type": "number"}, "s_hol": {"type": "number"}, "ms": {"type": "number"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "map_png": {"type": "string", "format": "byte", "description": "with ?map=1: residual map upsampled to the image size, 8-bit gray PNG (0..1 -> 0..255), base64"}}}
    },
    "responses": {
      "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    },
    "parameters": {
      "RequestId": {"name": "X-Request-Id", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"},
        "description": "echoed in the response's X-Request-Id and the log; generated when absent or not of this form"},
      "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "printable ASCII, at most 200 bytes (else 400). Kept in the store with the set, so it holds across replicas and restarts until the set is deleted. A retry with the same key and the same request (route, class and images' names and bytes, or the .gadref's bytes; not the multipart boundary) answers 200 with the set the first try made and Idempotent-Replayed: true; the same key with another request is a 409"}
    },
    "headers": {
      "RequestId": {"description": "the request id (see the X-Request-Id parameter)", "schema": {"type": "string"}},
      "Replayed": {"description": "true: this answers a retry with an Idempotency-Key already used; nothing new was stored", "schema": {"type": "string", "enum": ["true"]}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/healthz": {"get": {"summary": "liveness: 200 {status: ok} once the model is loaded, 503 {status: loading} before; no token needed", "security": [], "responses": {"200": {"description": "ok"}, "503": {"description": "model still loading"}}}},
    "/readyz": {"get": {"summary": "readiness for a load balancer: 200 {status: ready} when the model is loaded, the store answers and the server is not draining; else 503 {status: loading | store_unavailable | draining}, with Retry-After; no token needed", "security": [], "responses": {"200": {"description": "{status: ready, model: true, store: ok}"}, "503": {"description": "{status, model, store: why not}"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics; needs the token unless the server runs with --metrics-public", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
    "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
    "/v1/refsets": {
      "get": {"summary": "list reference sets", "responses": {"200": {"description": "{refsets: [RefSet]}"}}},
      "post": {"summary": "register a reference set (K <= --max-k images + class name); stored in one transaction, with its Idempotency-Key when given",
        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImagesMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}}}},
        "responses": {"201": {"description": "created; Location: /v1/refsets/{id}", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}},
          "200": {"description": "a retry with an Idempotency-Key already used for the same request: the set the first try made (as it is now), Idempotent-Replayed: true", "headers": {"Idempotent-Replayed": {"$ref": "#/components/headers/Replayed"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}},
          "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
          "409": {"description": "the Idempotency-Key was already used with another request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"},
          "429": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/import": {
      "post": {"summary": "register a .gadref file (GET /v1/refsets/{id}/export, or gad refs build / calibrate) as a new set, threshold included; it must be made with this server's model (fingerprint checked) and hold K <= --max-k; bounded by --max-body. Idempotency-Key as for registration",
        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
        "requestBody": {"required": true, "content": {
          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
          "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}},
        "responses": {"201": {"description": "created; Location: /v1/refsets/{id}", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}},
          "200": {"description": "a retry with an Idempotency-Key already used for the same file (Idempotent-Replayed: true)", "headers": {"Idempotent-Replayed": {"$ref": "#/components/headers/Replayed"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}},
          "400": {"description": "empty, truncated or corrupt file, or made with another model (the error names which)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "401": {"$ref": "#/components/responses/Error"}, "409": {"$ref": "#/components/responses/Error"},
          "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"},
          "429": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "one reference set, with its threshold (threshold, far, method, n) when calibrated", "responses": {"200": {"description": "RefSet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "delete a reference set", "responses": {"200": {"description": "{deleted: id}"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}/export": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "the set as a .gadref file (the stored bytes, threshold included): for POST /v1/refsets/import on another server with the same model, or gad score --refs",
        "responses": {"200": {"description": "Content-Disposition: attachment; filename=\"{id}.gadref\"", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
          "404": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}/score": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "map", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}}],
      "post": {"summary": "score one or several images (at most --max-images, and at most --queue); changes nothing, so a client or proxy may retry it (idempotent)",
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImagesMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}},
          "image/*": {"schema": {"type": "string", "format": "binary"}},
          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "{refset, results: [Score]}"},
          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
          "415": {"$ref": "#/components/responses/Error"},
          "429": {"description": "queue full; Retry-After header", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "503": {"$ref": "#/components/responses/Error"}}}},
    "/v1/zero-shot": {
      "parameters": [{"name": "map", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}},
        {"name": "z", "in": "query", "schema": {"type": "number", "default": 3.5}, "description": "verdict: anomalous when (score - median) / (1.4826 MAD) over the batch exceeds z"},
        {"name": "class", "in": "query", "schema": {"type": "string"}, "description": "the object's name for WinCLIP's text prompts (servers started with --scorer winclip; required there)"}],
      "post": {"summary": "zero-shot, MuSc (or WinCLIP's text prompts alone on a server started with --scorer winclip): the uploaded images (at least 5 with the default options, at most --max-images and --queue) score each other, no reference set; each result carries anomalous, threshold and verdict_rule (robust-z over the batch); an unreadable image gets its own error and the rest are scored without it; changes nothing (idempotent)",
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImagesMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}}}},
        "responses": {"200": {"description": "{scorer: musc | winclip, results: [Score]}"},
          "400": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
          "415": {"$ref": "#/components/responses/Error"},
          "429": {"description": "queue full; Retry-After header", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "503": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}/calibrate": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "far", "in": "query", "schema": {"type": "number", "default": 0.05}, "description": "false-alarm rate in (0, 1); a far form/JSON field overrides it"}],
      "post": {"summary": "score held-out normal images (at most --max-images; more than --queue are scored in chunks of half the queue, each needing room in it, else 429 and nothing stored) and store the conformal threshold in the set (one transaction; the set's version grows by one); later scores, through any replica, carry anomalous",
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/CalibrateMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/CalibrateJson"}}}},
        "responses": {"200": {"description": "stored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Threshold"}}}},
          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
          "415": {"$ref": "#/components/responses/Error"}, "429": {"$ref": "#/components/responses/Error"},
          "503": {"$ref": "#/components/responses/Error"}}}}
  }
})JSON");
  // Every operation takes and answers X-Request-Id: added here instead of repeated in each.
  static const nlohmann::ordered_json with_ids = [] {
    nlohmann::ordered_json d = doc;
    for (auto& [path, item] : d["paths"].items())
      for (auto& [method, op] : item.items()) {
        if (method == "parameters") continue;
        op["parameters"].push_back({{"$ref", "#/components/parameters/RequestId"}});
        for (auto& [code, response] : op["responses"].items())
          if (!response.contains("$ref")) response["headers"]["X-Request-Id"] = {{"$ref", "#/components/headers/RequestId"}};
      }
    return d;
  }();
  return with_ids;
  return doc;
}

}  // namespace gad::serve

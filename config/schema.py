"""The OpenAPI schema documents every status code an operation can answer, each with the
one error shape (config.api), so generated clients (openapi-generator, orval) have a type
for every reply."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    attr = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["client_error", "validation_error", "server_error"])
    code = serializers.CharField()
    detail = serializers.CharField()
    attr = serializers.CharField(allow_null=True)
    errors = ErrorDetailSerializer(many=True)


class LodestarAutoSchema(AutoSchema):
    """Adds the error replies the stack gives every operation of its kind: 400 (bad
    parameters or body), 401/403 (no or wrong credentials), 404 (an unknown path id),
    413/415 (a body too large or not JSON), 429 (rate limit) and 503 (database away)."""

    def _insert_field_validators(self, field, schema):
        # drf-spectacular writes a blank-allowed text with a pattern as oneOf [pattern,
        # empty string]; when the pattern matches "" too, "" matches both branches and so
        # breaks oneOf while the API accepts it. anyOf says what the field accepts.
        super()._insert_field_validators(field, schema)
        if len(schema.get("oneOf", ())) == 2 and schema["oneOf"][1] == {"type": "string",
                                                                        "maxLength": 0}:
            schema["anyOf"] = schema.pop("oneOf")

    def _get_request_body(self, direction="request"):
        # Every body this API takes is required: an empty POST is a 400.
        body = super()._get_request_body(direction)
        if body is not None:
            body["required"] = True
        return body

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = ["400", "429", "503"]
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]
        if "{" in self.path:
            codes.append("404")
        for code in sorted(codes):
            responses.setdefault(code, self._get_response_for_code(ErrorSerializer, code,
                                                                   direction=direction))
        return responses

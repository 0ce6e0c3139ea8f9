"""Query-parameter serializers that read ``name=`` as the schema types say: an error for
a number, date or choice, not the same as leaving the parameter out (DRF's form-input
rule would quietly use the default)."""

from django.core.validators import RegexValidator
from rest_framework import serializers

# DRF refuses NUL characters in every text field (the database cannot store them); as a
# declared pattern, the schema says so too.
NO_NUL = RegexValidator(r"^[^\x00]*$", message="Null characters are not allowed.")


class QueryParamsSerializer(serializers.Serializer):
    def to_internal_value(self, data):
        blank = {name: ["This field may not be blank."] for name, field in self.fields.items()
                 if data.get(name) == "" and not getattr(field, "allow_blank", False)}
        if blank:
            raise serializers.ValidationError(blank)
        return super().to_internal_value(data)


CATEGORY_MAX_CHARS = 255  # ingestion.models.Item.category


class CategoryFilterField(serializers.CharField):
    """An optional item category; empty (``category=``, a form's "all") means no filter."""

    def __init__(self, **kwargs):
        super().__init__(required=False, allow_blank=True, max_length=CATEGORY_MAX_CHARS,
                         validators=[NO_NUL], **kwargs)

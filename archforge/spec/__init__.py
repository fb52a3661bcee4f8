"""The spec stage: located YAML, the schema, expressions, and the bundled models and spaces by name."""

from archforge.spec.load import load_spec, parse_spec
from archforge.spec.schema import FORMAT_VERSION, DefineSpec, InputSpec, NodeSpec, Spec
from archforge.spec.zoo import bundled_path, list_models, resolve_source

__all__ = [
    "FORMAT_VERSION", "DefineSpec", "InputSpec", "NodeSpec", "Spec", "bundled_path", "list_models", "load_spec", "parse_spec",
    "resolve_source",
]

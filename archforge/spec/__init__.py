"""The spec stage: located YAML, the schema, expressions."""

from archforge.spec.load import load_spec, parse_spec
from archforge.spec.schema import FORMAT_VERSION, DefineSpec, InputSpec, NodeSpec, Spec

__all__ = ["FORMAT_VERSION", "DefineSpec", "InputSpec", "NodeSpec", "Spec", "load_spec", "parse_spec"]

//! Compose v3 stack files: parsing, interpolation and validation into service definitions.

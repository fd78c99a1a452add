"""Problem files: YAML with positions, the schema, validation and the built model."""

"""Operations: the embedded local stack, and later metrics and status."""
